"""A local Telegram Bot API stand-in: the HTTP methods gwbot uses, with Telegram's JSON and errors.

python-telegram-bot talks to it through its real HTTP stack (``base_url``), so tests and the
``gwbot chat`` demo exercise the bot end to end with no token and no internet. The "user side"
(people typing commands, pressing buttons, reading what the bot sent) is a Python API on the same
event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, NamedTuple

from aiohttp import BodyPartReader, web

from bot.telegram_standin.faults import Faults, Hangup
from bot.telegram_standin.formatting import Entity, FormatError, parse, trim, utf16_len, with_detected

log = logging.getLogger(__name__)

MAX_TEXT = 4096  # UTF-16 code units, after entity parsing
MAX_CAPTION = 1024
MAX_CALLBACK_DATA = 64  # bytes
MAX_UPLOAD = 50 * 1024 * 1024
NOT_MODIFIED = ("Bad Request: message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message")
QUERY_INVALID = "Bad Request: query is too old and response timeout expired or query ID is invalid"
CONFLICT = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
CHAT_ACTIONS = frozenset({"typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice",
                          "upload_document", "choose_sticker", "find_location", "record_video_note",
                          "upload_video_note"})
_TOKEN_SHAPE = re.compile(r"\d+:[\w-]+")
_COMMAND_NAME = re.compile(r"[a-z0-9_]{1,32}")


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
    DELETE = "delete"
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
    data: str  # callback_data ("" for a URL button)
    url: str | None = None


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
    text: str
    show_alert: bool
    url: str | None = None
    chat_id: int | None = None
    message_id: int | None = None
    user_id: int | None = None


@dataclass(frozen=True)
class ChatChange:
    kind: ChangeKind
    message: BotMessage
    answer: CallbackAnswer | None = None  # set for ChangeKind.ANSWER


@dataclass(frozen=True)
class ApiCall:
    method: str  # as the client spelled it, e.g. "editMessageText"
    params: dict[str, Any]  # as received (form values are strings); uploads shown as "<file name, N B>"
    mono: float  # time.monotonic() when the request arrived
    status: int = 200  # the HTTP status replied (0 while still running)


class Command(NamedTuple):
    """One entry of the bot's command menu; compares equal to a (command, description) tuple."""

    command: str
    description: str


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes
    mime: str


@dataclass(frozen=True)
class _Query:
    chat_id: int
    message_id: int
    user_id: int


@dataclass(frozen=True)
class _Update:
    update_id: int
    type: str  # "message", "edited_message", "callback_query"
    payload: dict[str, Any]

    def json(self) -> dict[str, Any]:
        return {"update_id": self.update_id, self.type: self.payload}


class ApiError(Exception):
    """An error reply: HTTP status = error_code, as Telegram does."""

    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


def bad_request(what: str) -> ApiError:
    return ApiError(400, f"Bad Request: {what}")


class BotApiStandIn:
    """Serve ``/bot<token>/<method>`` on ``host:port``; point PTB's ``base_url`` at :attr:`base_url`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str = "123456:TEST-TOKEN",
                 bot_username: str = "gwbot_test_bot") -> None:
        self.host = host
        self.port = port
        self.token = token
        self.bot_username = bot_username
        self.bot_user = {"id": int(token.split(":")[0]), "is_bot": True, "first_name": "gwbot",
                         "username": bot_username}
        self.users: dict[int, User] = {}
        self.chats: dict[int, Chat] = {}
        self.calls: list[ApiCall] = []
        self.callback_answers: list[CallbackAnswer] = []
        self._commands: dict[tuple[str, str], list[Command]] = {}  # (scope JSON, language) -> menu
        self._messages: dict[int, dict[int, BotMessage]] = {}
        self._user_messages: dict[int, dict[int, dict[str, Any]]] = {}  # what people sent, for replies
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._updates: list[_Update] = []
        self._update_ids = itertools.count(1)
        self._callback_ids = itertools.count(1)
        self._queries: dict[str, _Query] = {}
        self._allowed_updates: frozenset[str] = frozenset()  # empty: all
        self._poll: asyncio.Future[None] | None = None  # the pending long poll, woken by an update
        self._subscribers: list[asyncio.Queue[ChatChange]] = []
        self._floods: dict[str, tuple[int, int]] = {}  # method (lower case) -> (retry_after, times left)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._closing = False
        self.faults = Faults()  # misbehaviour on demand (tests, bench): see faults.py

    # ------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        """The value for PTB's ``base_url`` (PTB appends the token and the method)."""
        return f"http://{self.host}:{self.port}/bot"

    @property
    def commands(self) -> list[Command]:
        """The default command menu, as set by setMyCommands."""
        return list(self._commands.get(("", ""), []))

    async def start(self) -> None:
        self._closing = False
        app = web.Application(client_max_size=MAX_UPLOAD)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_route("*", "/{tail:.*}", _not_found)
        # handler_cancellation: a client that hangs up (PTB stopping) ends its long poll here too.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5, handler_cancellation=True)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.host, self.port)
        await self._site.start()
        self.port = self._runner.addresses[0][1]
        log.info("Telegram Bot API stand-in on %s", self.base_url)

    async def stop(self) -> None:
        self._closing = True
        self._wake_poll()  # release a long poll at once
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> BotApiStandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------ user side
    def user(self, id: int, first_name: str, username: str | None = None) -> User:
        """A person; also opens their private chat with the bot (chat id = user id)."""
        if id <= 0:
            raise ValueError(f"a user id is positive, not {id}")
        person = User(id, first_name, username)
        self.users[id] = person
        self.chats[id] = Chat(id, ChatType.PRIVATE, first_name, username)
        return person

    def group(self, chat_id: int, title: str) -> Chat:
        """A group chat the bot is in; ids below -10**12 (-100...) are supergroups, as on Telegram."""
        if chat_id >= 0:
            raise ValueError(f"a group chat id is negative, not {chat_id}")
        chat = Chat(chat_id, ChatType.SUPERGROUP if chat_id < -10**12 else ChatType.GROUP, title)
        self.chats[chat_id] = chat
        return chat

    def send_text(self, chat_id: int, user_id: int, text: str) -> int:
        """A person types ``text`` in a chat; returns the update id."""
        chat, person = self._chat_of(chat_id), self._user_of(user_id)
        if not text.strip():
            raise ValueError("Telegram clients do not send empty messages")
        message = self._user_message(chat, person, self._next_message_id(chat_id), text)
        self._user_messages.setdefault(chat_id, {})[message["message_id"]] = message
        return self._enqueue("message", message)

    def edit_text(self, chat_id: int, user_id: int, message_id: int, text: str) -> int:
        """A person edits one of their messages (an ``edited_message`` update); returns the update id."""
        chat, person = self._chat_of(chat_id), self._user_of(user_id)
        if message_id not in self._user_messages.get(chat_id, {}):
            raise ValueError(f"no message {message_id} from a person in chat {chat_id}")
        message = self._user_message(chat, person, message_id, text)
        message["date"] = self._user_messages[chat_id][message_id]["date"]
        message["edit_date"] = int(time.time())
        self._user_messages[chat_id][message_id] = message
        return self._enqueue("edited_message", message)

    def press(self, chat_id: int, user_id: int, message_id: int, data: str) -> str:
        """A person presses an inline button of a bot message; returns the callback query id.

        Delivered even when the message no longer shows that button: Telegram delivers stale presses
        (an old client, a double tap), so the bot must cope.
        """
        chat, person = self._chat_of(chat_id), self._user_of(user_id)
        current = self._messages.get(chat_id, {}).get(message_id)
        if current is None:
            # Deleted or never sent: Telegram sends an InaccessibleMessage (date 0).
            shown: dict[str, Any] = {"chat": chat.json(), "message_id": message_id, "date": 0}
        else:
            if data not in {b.data for b in current.button_list}:
                log.info("stand-in: %s presses %r, which message %s no longer shows", person.first_name, data,
                         message_id)
            shown = self._message_json(current)
        query_id = str(next(self._callback_ids))
        self._queries[query_id] = _Query(chat_id, message_id, user_id)
        self._enqueue("callback_query", {"id": query_id, "from": person.json(), "message": shown,
                                         "chat_instance": str(chat_id), "data": data})
        return query_id

    def messages(self, chat_id: int) -> list[BotMessage]:
        """The bot's messages in a chat, current state, oldest first (deleted ones left out)."""
        return list(self._messages.get(chat_id, {}).values())

    def message(self, chat_id: int, message_id: int) -> BotMessage | None:
        return self._messages.get(chat_id, {}).get(message_id)

    def subscribe(self) -> asyncio.Queue[ChatChange]:
        """Every change to the bot's messages from now on (all chats); unsubscribe when done."""
        queue: asyncio.Queue[ChatChange] = asyncio.Queue()
        self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[ChatChange]) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(queue)

    async def wait_for(self, predicate: Callable[[BotMessage], bool], chat_id: int | None = None,
                       timeout: float = 10.0) -> BotMessage:
        """The first bot message that matches: one already there, else a new one or a new edit.

        Raises TimeoutError listing the chat's recent messages, so a failing test shows what came.
        """
        queue = self.subscribe()
        try:
            for cid in [chat_id] if chat_id is not None else list(self._messages):
                for message in self.messages(cid):
                    if predicate(message):
                        return message
            async with asyncio.timeout(timeout):
                while True:
                    change = await queue.get()
                    if change.kind not in (ChangeKind.NEW, ChangeKind.EDIT):
                        continue
                    if (chat_id is None or change.message.chat_id == chat_id) and predicate(change.message):
                        return change.message
        except TimeoutError:
            where = "any chat" if chat_id is None else f"chat {chat_id}"
            raise TimeoutError(f"no matching bot message in {where} within {timeout:g} s; recent messages:\n"
                               f"{self.dump(chat_id)}") from None
        finally:
            self.unsubscribe(queue)

    def dump(self, chat_id: int | None = None, last: int = 8) -> str:
        """The last few bot messages, one line each, for failure messages."""
        lines = []
        for cid in [chat_id] if chat_id is not None else list(self._messages):
            for m in self.messages(cid)[-last:]:
                buttons = " ".join(f"[{b.text}]" for b in m.button_list)
                name = f" {m.file_name}" if m.file_name else ""
                lines.append(f"  chat {cid} #{m.message_id} {m.kind}{name} (edits {m.edits}): {m.text[:300]!r}"
                             + (f" {buttons}" if buttons else ""))
        return "\n".join(lines) or "  (no messages)"

    def flood(self, method: str, retry_after: int = 1, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` get 429 Too Many Requests (retry after ``retry_after`` s)."""
        self._floods[method.lower()] = (retry_after, times)

    # --------------------------------------------------------------- faults
    async def refuse_connections(self) -> None:
        """Telegram unreachable: the port closes (new connections refused) and open ones are cut."""
        if self._site is not None:
            await self._site.stop()
            self._site = None
        if self._runner is not None and self._runner.server is not None:
            for connection in list(self._runner.server.connections):
                connection.force_close()
        log.info("stand-in: refusing connections on port %s", self.port)

    async def accept_connections(self) -> None:
        """Back after refuse_connections(): listen on the same port again."""
        if self._runner is not None and self._site is None:
            self._site = web.TCPSite(self._runner, self.host, self.port)
            await self._site.start()
            log.info("stand-in: accepting connections on port %s again", self.port)

    async def _fault(self, method: str, p: _Params) -> None:
        try:
            chat_id = int(p.text("chat_id") or "")
        except ValueError:
            chat_id = None
        chat = self.chats.get(chat_id) if chat_id is not None else None
        answer = await self.faults.apply(method, chat_id, chat is not None and chat.type is not ChatType.PRIVATE)
        if answer is not None:
            raise ApiError(answer.code, answer.description, answer.parameters)

    # ----------------------------------------------------------------- HTTP
    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        token = request.match_info["token"]
        if not _TOKEN_SHAPE.fullmatch(token):
            return _reply_error(ApiError(404, "Not Found"))  # Telegram: a malformed token is not a bot at all
        if token != self.token:
            return _reply_error(ApiError(401, "Unauthorized"))
        index = len(self.calls)
        self.calls.append(ApiCall(method, {}, time.monotonic(), 0))
        status = 500
        try:
            params = await _read_params(request)
            self.calls[index] = replace(self.calls[index], params=params.shown())
            handler = getattr(self, f"_m_{method.lower()}", None)
            if handler is None:
                raise ApiError(404, "Not Found")
            await self._fault(method, params)
            self._check_flood(method)
            result = await handler(params)
            status = 200
            return web.json_response({"ok": True, "result": result})
        except asyncio.CancelledError:
            status = 499  # the client hung up (nginx's code for it)
            raise
        except Hangup:
            status = 444  # closed without an answer (nginx's code for it)
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=444)
        except ApiError as e:
            status = e.code
            log.debug("stand-in %s -> %s %s", method, e.code, e.description)
            return _reply_error(e)
        except Exception:
            log.exception("stand-in: %s failed", method)
            return _reply_error(ApiError(500, "Internal Server Error"))
        finally:
            self.calls[index] = replace(self.calls[index], status=status)

    def _check_flood(self, method: str) -> None:
        retry_after, times = self._floods.get(method.lower(), (0, 0))
        if times > 0:
            self._floods[method.lower()] = (retry_after, times - 1)
            raise ApiError(429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after})

    # ------------------------------------------------------------- methods
    async def _m_getme(self, _: _Params) -> dict[str, Any]:
        return {**self.bot_user, "can_join_groups": True, "can_read_all_group_messages": False,
                "supports_inline_queries": False}

    async def _m_deletewebhook(self, p: _Params) -> bool:
        if p.flag("drop_pending_updates"):
            self._updates.clear()
        return True

    async def _m_getupdates(self, p: _Params) -> list[dict[str, Any]]:
        offset = p.integer("offset") or 0
        limit = min(max(p.integer("limit") or 100, 1), 100)
        timeout = max(p.number("timeout") or 0.0, 0.0)
        allowed = p.decoded("allowed_updates", "can't parse allowed_updates JSON array")
        if isinstance(allowed, list):
            self._allowed_updates = frozenset(str(a) for a in allowed)
        self._terminate_poll()  # a newer getUpdates ends an older one, as on Telegram
        if offset < 0:
            self._updates = self._updates[offset:]  # the last -offset updates; earlier ones are forgotten
        elif offset:
            self._updates = [u for u in self._updates if u.update_id >= offset]
        if not self._updates and timeout > 0 and not self._closing:
            waiter = self._poll = asyncio.get_running_loop().create_future()
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await waiter
            finally:
                if self._poll is waiter:
                    self._poll = None
        return [u.json() for u in self._updates[:limit]]

    async def _m_sendmessage(self, p: _Params) -> dict[str, Any]:
        chat_id = self._chat_id(p)
        text, entities = self._formatted(p, "text", "entities", MAX_TEXT)
        if not text:
            raise bad_request("message text is empty")
        return self._store(BotMessage(self._next_message_id(chat_id), chat_id, MessageKind.TEXT, text,
                                      self._keyboard(p), disable_notification=p.flag("disable_notification"),
                                      sent_at=time.monotonic(), entities=entities,
                                      reply_to_message_id=self._reply_to(p, chat_id), date=int(time.time())))

    async def _m_editmessagetext(self, p: _Params) -> dict[str, Any]:
        current = self._existing(p, "edit")
        text, entities = self._formatted(p, "text", "entities", MAX_TEXT)
        if not text:
            raise bad_request("message text is empty")
        if current.kind is not MessageKind.TEXT:
            raise bad_request("there is no text in the message to edit")
        # No reply_markup in an edit removes the inline keyboard, as on Telegram.
        return self._edit(current, text, entities, self._keyboard(p))

    async def _m_editmessagecaption(self, p: _Params) -> dict[str, Any]:
        current = self._existing(p, "edit")
        if current.kind is MessageKind.TEXT:
            raise bad_request("there is no caption in the message to edit")
        caption, entities = self._formatted(p, "caption", "caption_entities", MAX_CAPTION)
        return self._edit(current, caption, entities, self._keyboard(p))

    async def _m_editmessagereplymarkup(self, p: _Params) -> dict[str, Any]:
        current = self._existing(p, "edit")
        return self._edit(current, current.text, current.entities, self._keyboard(p))

    async def _m_senddocument(self, p: _Params) -> dict[str, Any]:
        return self._upload(p, MessageKind.DOCUMENT)

    async def _m_sendphoto(self, p: _Params) -> dict[str, Any]:
        return self._upload(p, MessageKind.PHOTO)

    async def _m_answercallbackquery(self, p: _Params) -> bool:
        query = self._queries.get(p.text("callback_query_id") or "")
        if query is None:
            raise bad_request(QUERY_INVALID.removeprefix("Bad Request: "))
        answer = CallbackAnswer(p.text("callback_query_id") or "", p.text("text") or "", p.flag("show_alert"),
                                p.text("url"), query.chat_id, query.message_id, query.user_id)
        self.callback_answers.append(answer)
        message = self.message(query.chat_id, query.message_id)
        if message is not None:
            self._notify(ChatChange(ChangeKind.ANSWER, message, answer))
        return True

    async def _m_setmycommands(self, p: _Params) -> bool:
        raw = p.decoded("commands", "commands")
        if not isinstance(raw, list):
            raise bad_request("parameter \"commands\" is required")
        menu = []
        for entry in raw:
            if not isinstance(entry, dict) or not _COMMAND_NAME.fullmatch(str(entry.get("command", ""))):
                raise bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(str(entry.get("description", "")).strip()) <= 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
            menu.append(Command(entry["command"], entry["description"]))
        self._commands[self._menu_key(p)] = menu
        return True

    async def _m_getmycommands(self, p: _Params) -> list[dict[str, str]]:
        return [c._asdict() for c in self._commands.get(self._menu_key(p), [])]

    async def _m_deletemycommands(self, p: _Params) -> bool:
        self._commands.pop(self._menu_key(p), None)
        return True

    async def _m_deletemessage(self, p: _Params) -> bool:
        current = self._existing(p, "delete")
        del self._messages[current.chat_id][current.message_id]
        self._notify(ChatChange(ChangeKind.DELETE, current))
        return True

    async def _m_sendchataction(self, p: _Params) -> bool:
        self._chat_id(p)
        if p.text("action") not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        return True

    async def _m_getchat(self, p: _Params) -> dict[str, Any]:
        return self.chats[self._chat_id(p)].json()

    # ------------------------------------------------------------- helpers
    def _chat_of(self, chat_id: int) -> Chat:
        if chat_id not in self.chats:
            raise ValueError(f"unknown chat {chat_id}: create it with standin.user() or standin.group()")
        return self.chats[chat_id]

    def _user_of(self, user_id: int) -> User:
        if user_id not in self.users:
            raise ValueError(f"unknown user {user_id}: create them with standin.user()")
        return self.users[user_id]

    def _chat_id(self, p: _Params) -> int:
        value = p.text("chat_id")
        if not value:
            raise bad_request("chat_id is empty")
        if value.startswith("@"):
            found = [c.id for c in self.chats.values() if c.username and f"@{c.username}" == value]
            if found:
                return found[0]
            raise bad_request("chat not found")
        try:
            chat_id = int(value)
        except ValueError:
            raise bad_request("chat not found") from None
        if chat_id not in self.chats:
            raise bad_request("chat not found")
        return chat_id

    def _existing(self, p: _Params, action: str) -> BotMessage:
        if p.text("inline_message_id"):
            raise bad_request("MESSAGE_ID_INVALID")  # the stand-in has no inline messages
        chat_id = self._chat_id(p)
        message_id = p.integer("message_id")
        if message_id is None:
            raise bad_request("message identifier is not specified")
        current = self.message(chat_id, message_id)
        if current is None:
            raise bad_request(f"message to {action} not found")
        return current

    def _formatted(self, p: _Params, field: str, entities_field: str, limit: int) -> tuple[str, tuple[Entity, ...]]:
        raw = p.text(field) or ""
        explicit = p.decoded(entities_field, entities_field)
        try:
            if isinstance(explicit, list) and explicit:
                text, entities = trim(raw, tuple(_entity(e) for e in explicit))
            else:
                text, entities = parse(raw, p.text("parse_mode"))
        except FormatError as e:
            raise bad_request(str(e)) from None
        if utf16_len(text) > limit:
            raise bad_request("message is too long" if field == "text" else "message caption is too long")
        return text, with_detected(text, entities)

    def _keyboard(self, p: _Params) -> tuple[tuple[Button, ...], ...]:
        markup = p.decoded("reply_markup", "can't parse reply keyboard markup JSON object")
        if not markup:
            return ()
        if not isinstance(markup, dict):
            raise bad_request("can't parse reply keyboard markup JSON object")
        rows = markup.get("inline_keyboard")
        if rows is None:
            return ()  # a reply keyboard or force_reply: people see it, but it has no callback buttons
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise bad_request("can't parse inline keyboard button: InlineKeyboardButton must be an Object")
        return tuple(tuple(_button(b) for b in row) for row in rows)

    def _reply_to(self, p: _Params, chat_id: int) -> int | None:
        reply = p.decoded("reply_parameters", "can't parse reply parameters JSON object")
        if isinstance(reply, dict):
            message_id, lenient = reply.get("message_id"), bool(reply.get("allow_sending_without_reply"))
        else:
            message_id, lenient = p.integer("reply_to_message_id"), p.flag("allow_sending_without_reply")
        if message_id is None:
            return None
        known = message_id in self._messages.get(chat_id, {}) or message_id in self._user_messages.get(chat_id, {})
        if known:
            return int(message_id)
        if lenient:
            return None
        raise bad_request("message to be replied not found")

    def _menu_key(self, p: _Params) -> tuple[str, str]:
        scope = p.decoded("scope", "can't parse BotCommandScope JSON object")
        default = not scope or (isinstance(scope, dict) and scope.get("type") == "default")
        return ("" if default else json.dumps(scope, sort_keys=True), p.text("language_code") or "")

    def _edit(self, current: BotMessage, text: str, entities: tuple[Entity, ...],
              buttons: tuple[tuple[Button, ...], ...]) -> dict[str, Any]:
        if (text, entities, buttons) == (current.text, current.entities, current.buttons):
            raise ApiError(400, NOT_MODIFIED)
        return self._store(replace(current, text=text, entities=entities, buttons=buttons, edits=current.edits + 1,
                                   edited_at=time.monotonic(), edit_date=int(time.time())), edit=True)

    def _upload(self, p: _Params, kind: MessageKind) -> dict[str, Any]:
        chat_id = self._chat_id(p)
        field = str(kind)
        upload = p.upload(field)
        if upload is None:
            if p.text(field):
                raise bad_request("wrong file identifier/HTTP URL specified")  # no files are stored by id here
            raise bad_request(f"there is no {field} in the request")
        size = None
        if kind is MessageKind.PHOTO:
            size = _image_size(upload.data)
            if size is None:
                raise bad_request("IMAGE_PROCESS_FAILED")
        caption, entities = self._formatted(p, "caption", "caption_entities", MAX_CAPTION)
        return self._store(BotMessage(self._next_message_id(chat_id), chat_id, kind, caption, self._keyboard(p),
                                      upload.name, upload.data, upload.mime,
                                      disable_notification=p.flag("disable_notification"), sent_at=time.monotonic(),
                                      entities=entities, reply_to_message_id=self._reply_to(p, chat_id),
                                      date=int(time.time()), size=size))

    def _store(self, message: BotMessage, *, edit: bool = False) -> dict[str, Any]:
        self._messages.setdefault(message.chat_id, {})[message.message_id] = message
        self._notify(ChatChange(ChangeKind.EDIT if edit else ChangeKind.NEW, message))
        return self._message_json(message)

    def _notify(self, change: ChatChange) -> None:
        for queue in self._subscribers:
            queue.put_nowait(change)

    def _next_message_id(self, chat_id: int) -> int:
        # Telegram numbers messages per chat, the people's and the bot's in one sequence.
        return next(self._message_ids.setdefault(chat_id, itertools.count(1)))

    def _enqueue(self, kind: str, payload: dict[str, Any]) -> int:
        update_id = next(self._update_ids)
        if self._allowed_updates and kind not in self._allowed_updates:
            log.info("stand-in: %s update %s dropped (allowed_updates %s)", kind, update_id,
                     sorted(self._allowed_updates))
            return update_id
        self._updates.append(_Update(update_id, kind, payload))
        self._wake_poll()
        return update_id

    def _wake_poll(self) -> None:
        if self._poll is not None and not self._poll.done():
            self._poll.set_result(None)

    def _terminate_poll(self) -> None:
        if self._poll is not None and not self._poll.done():
            self._poll.set_exception(ApiError(409, CONFLICT))
        self._poll = None

    def _user_message(self, chat: Chat, person: User, message_id: int, text: str) -> dict[str, Any]:
        message: dict[str, Any] = {"message_id": message_id, "date": int(time.time()), "chat": chat.json(),
                                   "from": person.json(), "text": text}
        entities = with_detected(text, ())
        if entities:
            message["entities"] = [e.json() for e in entities]
        return message

    def _message_json(self, m: BotMessage, *, nested: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"message_id": m.message_id, "from": self.bot_user, "chat": self.chats[m.chat_id].json(),
                               "date": m.date}
        if m.edit_date is not None:
            out["edit_date"] = m.edit_date
        if m.reply_to_message_id is not None and not nested:
            # Telegram nests the replied-to message one level deep only.
            replied = self.message(m.chat_id, m.reply_to_message_id)
            out["reply_to_message"] = (self._message_json(replied, nested=True) if replied is not None else
                                       self._user_messages.get(m.chat_id, {}).get(m.reply_to_message_id))
            if out["reply_to_message"] is None:
                del out["reply_to_message"]
        file_id = f"{m.kind}-{m.chat_id}-{m.message_id}"
        size = len(m.file_bytes or b"")
        if m.kind is MessageKind.TEXT:
            out["text"] = m.text
            if m.entities:
                out["entities"] = [e.json() for e in m.entities]
        else:
            if m.kind is MessageKind.DOCUMENT:
                out["document"] = {"file_id": file_id, "file_unique_id": file_id, "file_name": m.file_name,
                                   "mime_type": m.mime_type, "file_size": size}
            else:
                width, height = m.size or (0, 0)
                out["photo"] = [{"file_id": file_id, "file_unique_id": file_id, "width": width, "height": height,
                                 "file_size": size}]
            if m.text:
                out["caption"] = m.text
                if m.entities:
                    out["caption_entities"] = [e.json() for e in m.entities]
        if m.buttons:
            out["reply_markup"] = {"inline_keyboard": [[_button_json(b) for b in row] for row in m.buttons]}
        return out


class _Params:
    """A request's parameters: form fields are strings (JSON-encoded where not plain text), as PTB sends them."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def shown(self) -> dict[str, Any]:
        return {k: f"<file {v.name}, {len(v.data)} B>" if isinstance(v, Upload) else v
                for k, v in self.values.items()}

    def text(self, key: str) -> str | None:
        value = self.values.get(key)
        if value is None or isinstance(value, Upload):
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        return value if isinstance(value, str) else str(value)

    def integer(self, key: str) -> int | None:
        value = self.values.get(key)
        if value is None or value == "":
            return None
        try:
            if isinstance(value, bool | float | Upload):
                raise ValueError(value)
            return int(value)
        except (TypeError, ValueError):
            raise bad_request(f'field "{key}" must be of type Integer') from None

    def number(self, key: str) -> float | None:
        value = self.values.get(key)
        if value is None or value == "":
            return None
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad_request(f'field "{key}" must be of type Number') from None

    def flag(self, key: str) -> bool:
        value = self.values.get(key)
        return value is True or str(value).lower() in ("true", "1")

    def decoded(self, key: str, error: str) -> Any:
        value = self.values.get(key)
        if not isinstance(value, str):
            return value  # absent, or already decoded from a JSON body
        if not value:
            return None
        try:
            return json.loads(value)
        except ValueError:
            raise bad_request(error) from None

    def upload(self, key: str) -> Upload | None:
        value = self.values.get(key)
        if isinstance(value, str) and value.startswith("attach://"):
            value = self.values.get(value.removeprefix("attach://"))
        return value if isinstance(value, Upload) else None


async def _read_params(request: web.Request) -> _Params:
    """Query string plus a urlencoded, multipart or JSON body: Telegram accepts them all."""
    values: dict[str, Any] = dict(request.query)
    if not request.body_exists:
        return _Params(values)
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise bad_request("can't parse JSON object") from None
        if not isinstance(body, dict):
            raise bad_request("can't parse JSON object")
        values.update(body)
    elif request.content_type == "multipart/form-data":
        values.update(await _read_multipart(request))
    else:
        values.update(await request.post())
    return _Params(values)


async def _read_multipart(request: web.Request) -> dict[str, Any]:
    # Read parts into memory ourselves: request.post() spools files to disk, which is blocking I/O.
    values: dict[str, Any] = {}
    total = 0
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        data = bytes(await part.read(decode=True))
        total += len(data)
        if total > MAX_UPLOAD:
            raise ApiError(413, "Request Entity Too Large")
        if part.filename is not None:
            mime = part.headers.get("Content-Type", "application/octet-stream")
            values[part.name] = Upload(part.filename, data, mime)
        else:
            values[part.name] = data.decode(part.get_charset("utf-8"), errors="replace")
    return values


def _entity(raw: Any) -> Entity:
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise bad_request("can't parse entities JSON object")
    try:
        return Entity(raw["type"], int(raw["offset"]), int(raw["length"]), raw.get("url"), raw.get("language"))
    except (KeyError, TypeError, ValueError):
        raise bad_request("can't parse entities JSON object") from None


def _button(raw: Any) -> Button:
    if not isinstance(raw, dict) or not str(raw.get("text") or "").strip():
        raise bad_request("can't parse inline keyboard button: Text must be non-empty")
    if "callback_data" in raw:
        data = str(raw["callback_data"])
        if not 1 <= len(data.encode()) <= MAX_CALLBACK_DATA:
            raise bad_request("BUTTON_DATA_INVALID")
        return Button(raw["text"], data)
    if raw.get("url"):
        return Button(raw["text"], "", str(raw["url"]))
    raise bad_request("can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard")


def _button_json(b: Button) -> dict[str, str]:
    return {"text": b.text, "url": b.url} if b.url is not None else {"text": b.text, "callback_data": b.data}


def _image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG, GIF, JPEG or WebP; None when it is not an image Telegram would take."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return width, height
    if data.startswith(b"\xff\xd8\xff"):
        return _jpeg_size(data) or (0, 0)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return 0, 0  # accepted; the size is not worth parsing VP8 for
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data) and data[i] == 0xFF:
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + length
    return None


def _reply_error(e: ApiError) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": e.code, "description": e.description}
    if e.parameters:
        body["parameters"] = e.parameters
    return web.json_response(body, status=e.code)


async def _not_found(_: web.Request) -> web.Response:
    return _reply_error(ApiError(404, "Not Found"))
