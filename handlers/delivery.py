"""The outbox's Transport for python-telegram-bot: one message out, Telegram's answer as a typed Outcome.

The mapping is all here, so the outbox (bot/outbox.py) decides what to do without knowing PTB.
"""

from __future__ import annotations

import logging
from typing import TypedDict

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Message
from telegram.constants import ParseMode
from telegram.error import BadRequest, ChatMigrated, Forbidden, NetworkError, RetryAfter, TelegramError

from bot.outbox import Outcome, OutcomeKind
from handlers.progress import retry_seconds
from storage import OutKind, OutMessage

log = logging.getLogger(__name__)
METHODS = {OutKind.TEXT: "sendMessage", OutKind.HTML: "sendMessage", OutKind.DOCUMENT: "sendDocument",
           OutKind.PHOTO: "sendPhoto"}


class _Common(TypedDict):
    """The keywords every send takes alike (spelt out so mypy checks them against PTB's signatures)."""

    disable_notification: bool
    read_timeout: float
    write_timeout: float
    connect_timeout: float
    pool_timeout: float


class TelegramTransport:
    def __init__(self, bot: Bot, timeout: float) -> None:
        self._bot = bot
        self._timeout = timeout

    async def send(self, chat_id: int, message: OutMessage) -> Outcome:
        method = "editMessageText" if message.edit_of is not None else METHODS[message.kind]
        try:
            sent = await self._call(chat_id, message)
        except RetryAfter as e:
            return Outcome(OutcomeKind.RETRY_AFTER, f"{method}: {e.message}", retry_after=retry_seconds(e))
        except ChatMigrated as e:
            return Outcome(OutcomeKind.MIGRATED, f"{method}: {e.message}", new_chat_id=e.new_chat_id)
        except Forbidden as e:
            return Outcome(OutcomeKind.BLOCKED, f"{method}: {e.message}")
        except BadRequest as e:
            said = e.message.lower()
            if "chat not found" in said:
                return Outcome(OutcomeKind.CHAT_NOT_FOUND, f"{method}: {e.message}")
            if "message is not modified" in said:  # the same edit twice (a retry after a lost answer)
                return Outcome(OutcomeKind.SENT, message_id=message.edit_of)
            if "too long" in said and "markup" not in said:
                return Outcome(OutcomeKind.TOO_LONG, f"{method}: {e.message}")
            if any(word in said for word in ("button", "keyboard", "reply markup")):  # e.g. BUTTON_DATA_INVALID
                return Outcome(OutcomeKind.BAD_BUTTONS, f"{method} to chat {chat_id}: {e.message}")
            if "message to edit not found" in said or "message can't be edited" in said:
                return Outcome(OutcomeKind.EDIT_GONE, f"{method} to chat {chat_id}: {e.message}")
            return Outcome(OutcomeKind.FAILED, f"{method} to chat {chat_id}: {e.message}")
        except NetworkError as e:  # refused, reset, timed out (TimedOut), HTTP 5xx
            return Outcome(OutcomeKind.UNREACHABLE, f"{method}: {type(e).__name__}: {e.message}")
        except TelegramError as e:
            return Outcome(OutcomeKind.FAILED, f"{method} to chat {chat_id}: {type(e).__name__}: {e.message}")
        return Outcome(OutcomeKind.SENT, message_id=sent.message_id)

    async def _call(self, chat_id: int, m: OutMessage) -> Message:
        t = self._timeout
        markup = (InlineKeyboardMarkup([[InlineKeyboardButton(label, callback_data=data) for label, data in m.buttons]])
                  if m.buttons else None)
        if m.edit_of is not None:  # an alert edited in place (acknowledged): buttons as the new text has them
            edited = await self._bot.edit_message_text(m.text, chat_id, m.edit_of, reply_markup=markup, read_timeout=t,
                                                       write_timeout=t, connect_timeout=t, pool_timeout=t)
            assert isinstance(edited, Message)
            return edited
        common: _Common = {"disable_notification": m.silent, "read_timeout": t, "write_timeout": t,
                           "connect_timeout": t, "pool_timeout": t}
        if m.kind is OutKind.TEXT:
            return await self._bot.send_message(chat_id, m.text, reply_markup=markup, **common)
        if m.kind is OutKind.HTML:
            return await self._bot.send_message(chat_id, m.text, parse_mode=ParseMode.HTML, **common)
        if m.kind is OutKind.DOCUMENT:
            return await self._bot.send_document(chat_id, m.data or b"", filename=m.file_name,
                                                 caption=m.text or None, **common)
        return await self._bot.send_photo(chat_id, m.data or b"", filename=m.file_name, caption=m.text or None,
                                          **common)
