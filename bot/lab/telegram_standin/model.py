"""What the Bot API stand-in keeps: people, chats, the bot's messages and the changes to them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from handlers.telegram_html import Entity


class ChatType(StrEnum):
    PRIVATE = "private"
    GROUP = "group"
    SUPERGROUP = "supergroup"


class MessageKind(StrEnum):
    TEXT = "text"
    DOCUMENT = "document"
    PHOTO = "photo"


class ChangeKind(StrEnum):
    NEW = "new"
    EDIT = "edit"
    ANSWER = "answer"  # the bot answered a button press on this message (a toast or an alert)


@dataclass(frozen=True)
class User:
    id: int
    first_name: str
    username: str | None = None

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        if self.username:
            out["username"] = self.username
        return out


@dataclass(frozen=True)
class Chat:
    id: int
    type: ChatType
    title: str  # a group's title; a private chat's first name
    username: str | None = None

    def json(self) -> dict[str, Any]:
        if self.type is ChatType.PRIVATE:
            out: dict[str, Any] = {"id": self.id, "type": "private", "first_name": self.title}
            if self.username:
                out["username"] = self.username
            return out
        return {"id": self.id, "type": str(self.type), "title": self.title}


@dataclass(frozen=True)
class Button:
    text: str
    data: str  # callback_data (gwbot sends no URL buttons)


@dataclass(frozen=True)
class BotMessage:
    """A message the bot sent, in its current state."""

    message_id: int
    chat_id: int
    kind: MessageKind
    text: str  # the text, or the caption of a file; plain (markup parsed away), as people see it
    buttons: tuple[tuple[Button, ...], ...] = ()
    file_name: str | None = None
    file_bytes: bytes | None = None
    mime_type: str | None = None
    edits: int = 0
    disable_notification: bool = False
    sent_at: float = 0.0  # time.monotonic()
    edited_at: float | None = None  # time.monotonic() of the last edit
    entities: tuple[Entity, ...] = ()
    reply_to_message_id: int | None = None
    date: int = 0  # Unix time, as in the Bot API
    edit_date: int | None = None
    size: tuple[int, int] | None = None  # a photo's width and height

    @property
    def button_list(self) -> list[Button]:
        return [b for row in self.buttons for b in row]


@dataclass(frozen=True)
class CallbackAnswer:
    callback_query_id: str
    chat_id: int
    message_id: int  # the message whose button was pressed
    user_id: int
    text: str = ""
    show_alert: bool = False


@dataclass(frozen=True)
class ChatChange:
    kind: ChangeKind
    message: BotMessage
    answer: CallbackAnswer | None = None  # set for ChangeKind.ANSWER


@dataclass
class ApiCall:  # filled in as the request goes on
    method: str  # as the client spelled it, e.g. "editMessageText"
    params: dict[str, Any]  # as received (form values are strings); uploads shown as "<file name, N B>"
    mono: float  # time.monotonic() when the request arrived
    status: int = 200  # the HTTP status replied (0 while still running)


class Command(NamedTuple):
    """One entry of the bot's command menu; compares equal to a (command, description) tuple."""

    command: str
    description: str
