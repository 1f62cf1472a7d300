"""The Bot API's JSON for messages, as Telegram shapes it (what PTB parses)."""

from __future__ import annotations

import struct
import time
from typing import Any

from bot.lab.telegram_standin.formatting import with_detected
from bot.lab.telegram_standin.model import BotMessage, Chat, MessageKind, User


def user_message(chat: Chat, person: User, message_id: int, text: str) -> dict[str, Any]:
    """A message a person sent, as getUpdates delivers it."""
    message: dict[str, Any] = {"message_id": message_id, "date": int(time.time()), "chat": chat.json(),
                               "from": person.json(), "text": text}
    entities = with_detected(text, ())
    if entities:
        message["entities"] = [e.json() for e in entities]
    return message


def message_json(m: BotMessage, bot_user: dict[str, Any], chat: Chat,
                 reply_to: dict[str, Any] | None = None) -> dict[str, Any]:
    """A message the bot sent; ``reply_to``: the replied-to message's JSON, if there is one."""
    out: dict[str, Any] = {"message_id": m.message_id, "from": bot_user, "chat": chat.json(), "date": m.date}
    if m.edit_date is not None:
        out["edit_date"] = m.edit_date
    if reply_to is not None:
        out["reply_to_message"] = reply_to
    file_id = f"{m.kind}-{m.chat_id}-{m.message_id}"
    file = {"file_id": file_id, "file_unique_id": file_id, "file_size": len(m.file_bytes or b"")}
    if m.kind is MessageKind.DOCUMENT:
        out["document"] = {**file, "file_name": m.file_name, "mime_type": m.mime_type}
    elif m.kind is MessageKind.PHOTO:
        width, height = m.size or (0, 0)
        out["photo"] = [{**file, "width": width, "height": height}]
    text, entities = ("text", "entities") if m.kind is MessageKind.TEXT else ("caption", "caption_entities")
    if m.text:
        out[text] = m.text
    if m.entities:
        out[entities] = [e.json() for e in m.entities]
    if m.buttons:
        out["reply_markup"] = {"inline_keyboard": [[{"text": b.text, "callback_data": b.data} for b in row]
                                                   for row in m.buttons]}
    return out


def dump_line(m: BotMessage) -> str:
    """One bot message in one line, for a test's failure message."""
    buttons = " ".join(f"[{b.text}]" for b in m.button_list)
    name = f" {m.file_name}" if m.file_name else ""
    return (f"  chat {m.chat_id} #{m.message_id} {m.kind}{name} (edits {m.edits}): {m.text[:300]!r}"
            + (f" {buttons}" if buttons else ""))


def png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG (gwbot sends only its soak charts); None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    return None
