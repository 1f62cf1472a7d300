"""A local Telegram Bot API stand-in: the HTTP methods gwbot uses, with Telegram's JSON and errors.

python-telegram-bot talks to it through its real HTTP stack (``base_url``), so tests and the
``gwbot chat`` demo exercise the bot end to end with no token and no internet. The "user side"
(people typing commands, pressing buttons, reading what the bot sent) is a Python API.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

MAX_TEXT = 4096
NOT_MODIFIED = ("Bad Request: message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message")


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
    type: str  # "private" | "group" | "supergroup"
    title: str

    def json(self) -> dict[str, Any]:
        if self.type == "private":
            return {"id": self.id, "type": "private", "first_name": self.title}
        return {"id": self.id, "type": self.type, "title": self.title}


@dataclass(frozen=True)
class Button:
    text: str
    data: str


@dataclass(frozen=True)
class BotMessage:
    """A message the bot sent, in its current state."""

    message_id: int
    chat_id: int
    kind: str  # "text" | "document" | "photo"
    text: str
    buttons: tuple[tuple[Button, ...], ...] = ()
    file_name: str | None = None
    file_bytes: bytes | None = None
    mime_type: str | None = None
    edits: int = 0
    disable_notification: bool = False
    sent_at: float = 0.0
    edited_at: float | None = None

    @property
    def button_list(self) -> list[Button]:
        return [b for row in self.buttons for b in row]


@dataclass(frozen=True)
class ChatChange:
    kind: str  # "new" | "edit"
    message: BotMessage


@dataclass(frozen=True)
class ApiCall:
    method: str
    params: dict[str, Any]
    mono: float


@dataclass(frozen=True)
class CallbackAnswer:
    callback_query_id: str
    text: str
    show_alert: bool


class ApiError(Exception):
    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


class BotApiStandIn:
    """Serve ``/bot<token>/<method>`` on ``host:port``; point PTB's ``base_url`` at :attr:`base_url`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str = "123456:TEST-TOKEN",
                 bot_username: str = "gwbot_test_bot") -> None:
        self.host = host
        self.port = port
        self.token = token
        self.bot = {"id": int(token.split(":")[0]), "is_bot": True, "first_name": "gwbot", "username": bot_username,
                    "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}
        self.users: dict[int, User] = {}
        self.chats: dict[int, Chat] = {}
        self.calls: list[ApiCall] = []
        self.callback_answers: list[CallbackAnswer] = []
        self.commands: list[tuple[str, str]] = []
        self._messages: dict[int, dict[int, BotMessage]] = {}
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._callback_ids = itertools.count(1)
        self._wakeup = asyncio.Event()  # set when an update arrives (or we stop): ends a long poll
        self._subscribers: list[asyncio.Queue[ChatChange]] = []
        self._floods: dict[str, list[int]] = {}
        self._runner: web.AppRunner | None = None
        self._closing = False

    # ------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/bot"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("Telegram Bot API stand-in on %s", self.base_url)

    async def stop(self) -> None:
        self._closing = True
        self._wakeup.set()  # release long polls at once
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
        """A person; also opens the private chat with the bot (chat id = user id)."""
        person = User(id, first_name, username)
        self.users[id] = person
        self.chats.setdefault(id, Chat(id, "private", first_name))
        return person

    def group(self, chat_id: int, title: str) -> Chat:
        chat = Chat(chat_id, "supergroup" if chat_id < -10**12 else "group", title)
        self.chats[chat_id] = chat
        return chat

    def send_text(self, chat_id: int, user_id: int, text: str) -> int:
        """A person types ``text`` in a chat; returns the update id."""
        chat, person = self.chats[chat_id], self.users[user_id]
        message: dict[str, Any] = {"message_id": self._next_message_id(chat_id), "date": int(time.time()),
                                   "chat": chat.json(), "from": person.json(), "text": text}
        if text.startswith("/"):
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        return self._enqueue({"message": message})

    def edit_text(self, chat_id: int, user_id: int, message_id: int, text: str) -> int:
        """A person edits one of their messages (an ``edited_message`` update)."""
        chat, person = self.chats[chat_id], self.users[user_id]
        message: dict[str, Any] = {"message_id": message_id, "date": int(time.time()), "edit_date": int(time.time()),
                                   "chat": chat.json(), "from": person.json(), "text": text}
        if text.startswith("/"):
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        return self._enqueue({"edited_message": message})

    def press(self, chat_id: int, user_id: int, message_id: int, data: str) -> str:
        """A person presses an inline button of a bot message; returns the callback query id."""
        person = self.users[user_id]
        current = self._messages.get(chat_id, {}).get(message_id)
        if current is not None and data not in {b.data for b in current.button_list}:
            log.info("stand-in: %s presses %r, which message %s no longer shows", person.first_name, data, message_id)
        shown = self._message_json(current) if current else {
            "chat": self.chats[chat_id].json(), "message_id": message_id, "date": 0}
        query_id = str(next(self._callback_ids))
        self._enqueue({"callback_query": {"id": query_id, "from": person.json(), "message": shown,
                                          "chat_instance": str(chat_id), "data": data}})
        return query_id

    def messages(self, chat_id: int) -> list[BotMessage]:
        return list(self._messages.get(chat_id, {}).values())

    def subscribe(self) -> asyncio.Queue[ChatChange]:
        queue: asyncio.Queue[ChatChange] = asyncio.Queue()
        self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[ChatChange]) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(queue)

    async def wait_for(self, predicate: Callable[[BotMessage], bool], chat_id: int | None = None,
                       timeout: float = 10.0) -> BotMessage:
        """The first bot message (present, new, or newly edited) that matches."""
        queue = self.subscribe()
        try:
            chats = [chat_id] if chat_id is not None else list(self._messages)
            for cid in chats:
                for message in self.messages(cid):
                    if predicate(message):
                        return message
            async with asyncio.timeout(timeout):
                while True:
                    change = await queue.get()
                    if (chat_id is None or change.message.chat_id == chat_id) and predicate(change.message):
                        return change.message
        except TimeoutError:
            raise TimeoutError(f"no matching bot message within {timeout:g} s; recent:\n{self.dump(chat_id)}") from None
        finally:
            self.unsubscribe(queue)

    def dump(self, chat_id: int | None = None, last: int = 8) -> str:
        chats = [chat_id] if chat_id is not None else list(self._messages)
        lines = []
        for cid in chats:
            for m in self.messages(cid)[-last:]:
                buttons = " ".join(f"[{b.text}]" for b in m.button_list)
                lines.append(f"  chat {cid} #{m.message_id} {m.kind} (edits {m.edits}): {m.text[:300]!r} {buttons}")
        return "\n".join(lines) or "  (no messages)"

    def flood(self, method: str, retry_after: int = 1, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` get 429 Too Many Requests."""
        self._floods[method.lower()] = [retry_after, times]

    # ----------------------------------------------------------------- HTTP
    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.match_info["token"] != self.token:
            return _reply_error(ApiError(401, "Unauthorized"))
        try:
            params = await _params(request)
            self.calls.append(ApiCall(method, {k: v for k, v in params.items() if not isinstance(v, bytes)},
                                      time.monotonic()))
            self._check_flood(method)
            handler = getattr(self, f"_m_{method.lower()}", None)
            if handler is None:
                raise ApiError(404, "Not Found")
            result = await handler(params)
        except ApiError as e:
            log.debug("stand-in %s -> %s %s", method, e.code, e.description)
            return _reply_error(e)
        return web.json_response({"ok": True, "result": result})

    def _check_flood(self, method: str) -> None:
        flood = self._floods.get(method.lower())
        if flood and flood[1] > 0:
            flood[1] -= 1
            raise ApiError(429, f"Too Many Requests: retry after {flood[0]}", {"retry_after": flood[0]})

    # ------------------------------------------------------------- methods
    async def _m_getme(self, _: dict[str, Any]) -> dict[str, Any]:
        return self.bot

    async def _m_deletewebhook(self, _: dict[str, Any]) -> bool:
        return True

    async def _m_getupdates(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        offset, limit = _int(p, "offset", 0), _int(p, "limit", 100)
        timeout = float(p.get("timeout") or 0)
        if offset:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        if not self._updates and not self._closing:
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()
        return self._updates[:limit]

    async def _m_sendmessage(self, p: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat(p)
        text = str(p.get("text") or "")
        if not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if len(text) > MAX_TEXT:
            raise ApiError(400, "Bad Request: message is too long")
        return self._store(BotMessage(self._next_message_id(chat_id), chat_id, "text", text, _buttons(p),
                                      disable_notification=_bool(p, "disable_notification"),
                                      sent_at=time.monotonic()))

    async def _m_editmessagetext(self, p: dict[str, Any]) -> dict[str, Any]:
        current = self._existing(p)
        text = str(p.get("text") or "")
        if not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        return self._edit(current, text=text, buttons=_buttons(p))

    async def _m_editmessagereplymarkup(self, p: dict[str, Any]) -> dict[str, Any]:
        return self._edit(self._existing(p), text=None, buttons=_buttons(p))

    async def _m_senddocument(self, p: dict[str, Any]) -> dict[str, Any]:
        return self._upload(p, "document")

    async def _m_sendphoto(self, p: dict[str, Any]) -> dict[str, Any]:
        return self._upload(p, "photo")

    async def _m_answercallbackquery(self, p: dict[str, Any]) -> bool:
        if not p.get("callback_query_id"):
            raise ApiError(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
        self.callback_answers.append(CallbackAnswer(str(p["callback_query_id"]), str(p.get("text") or ""),
                                                    _bool(p, "show_alert")))
        return True

    async def _m_setmycommands(self, p: dict[str, Any]) -> bool:
        commands = _json(p, "commands", [])
        self.commands = [(c["command"], c["description"]) for c in commands]
        return True

    async def _m_getmycommands(self, _: dict[str, Any]) -> list[dict[str, str]]:
        return [{"command": c, "description": d} for c, d in self.commands]

    async def _m_deletemessage(self, p: dict[str, Any]) -> bool:
        current = self._existing(p)
        del self._messages[current.chat_id][current.message_id]
        return True

    async def _m_sendchataction(self, p: dict[str, Any]) -> bool:
        self._chat(p)
        return True

    async def _m_getchat(self, p: dict[str, Any]) -> dict[str, Any]:
        return self.chats[self._chat(p)].json()

    # ------------------------------------------------------------- helpers
    def _chat(self, p: dict[str, Any]) -> int:
        try:
            chat_id = int(p.get("chat_id"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ApiError(400, "Bad Request: chat not found") from None
        if chat_id not in self.chats:
            raise ApiError(400, "Bad Request: chat not found")
        return chat_id

    def _existing(self, p: dict[str, Any]) -> BotMessage:
        chat_id = self._chat(p)
        current = self._messages.get(chat_id, {}).get(_int(p, "message_id", 0))
        if current is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        return current

    def _edit(self, current: BotMessage, *, text: str | None, buttons: tuple[tuple[Button, ...], ...]) -> dict[str, Any]:
        new_text = current.text if text is None else text
        if new_text == current.text and buttons == current.buttons:
            raise ApiError(400, NOT_MODIFIED)
        return self._store(replace(current, text=new_text, buttons=buttons, edits=current.edits + 1,
                                   edited_at=time.monotonic()), edit=True)

    def _upload(self, p: dict[str, Any], field: str) -> dict[str, Any]:
        chat_id = self._chat(p)
        value = p.get(field)
        if isinstance(value, str) and value.startswith("attach://"):
            value = p.get(value.removeprefix("attach://"))
        if not isinstance(value, _Upload):
            raise ApiError(400, f"Bad Request: there is no {field} in the request")
        return self._store(BotMessage(self._next_message_id(chat_id), chat_id, field, str(p.get("caption") or ""),
                                      _buttons(p), value.name, value.data, value.mime,
                                      disable_notification=_bool(p, "disable_notification"), sent_at=time.monotonic()))

    def _store(self, message: BotMessage, *, edit: bool = False) -> dict[str, Any]:
        self._messages.setdefault(message.chat_id, {})[message.message_id] = message
        for queue in self._subscribers:
            queue.put_nowait(ChatChange("edit" if edit else "new", message))
        return self._message_json(message)

    def _next_message_id(self, chat_id: int) -> int:
        # Telegram numbers messages per chat, the person's and the bot's in one sequence.
        return next(self._message_ids.setdefault(chat_id, itertools.count(1)))

    def _enqueue(self, update: dict[str, Any]) -> int:
        update_id = next(self._update_ids)
        self._updates.append({"update_id": update_id, **update})
        self._wakeup.set()
        return update_id

    def _message_json(self, m: BotMessage) -> dict[str, Any]:
        out: dict[str, Any] = {"message_id": m.message_id, "date": int(time.time()),
                               "chat": self.chats[m.chat_id].json(), "from": self.bot}
        if m.edited_at is not None:
            out["edit_date"] = int(datetime.now(UTC).timestamp())
        file_id = f"{m.kind}-{m.chat_id}-{m.message_id}"
        size = len(m.file_bytes or b"")
        if m.kind == "text":
            out["text"] = m.text
        elif m.kind == "document":
            out["document"] = {"file_id": file_id, "file_unique_id": file_id, "file_name": m.file_name,
                               "mime_type": m.mime_type, "file_size": size}
        else:
            out["photo"] = [{"file_id": file_id, "file_unique_id": file_id, "width": 800, "height": 320,
                             "file_size": size}]
        if m.kind != "text" and m.text:
            out["caption"] = m.text
        if m.buttons:
            out["reply_markup"] = {"inline_keyboard": [[{"text": b.text, "callback_data": b.data} for b in row]
                                                       for row in m.buttons]}
        return out


@dataclass(frozen=True)
class _Upload:
    name: str
    data: bytes
    mime: str


async def _params(request: web.Request) -> dict[str, Any]:
    """Query string, form, multipart or JSON body, as Telegram accepts them all."""
    params: dict[str, Any] = dict(request.query)
    if request.method != "POST" or not request.can_read_body:
        return params
    if request.content_type == "application/json":
        params.update(await request.json())
        return params
    form = await request.post()
    for key, value in form.items():
        if isinstance(value, web.FileField):
            params[key] = _Upload(value.filename or key, value.file.read(), value.content_type)
        else:
            params[key] = value
    return params


def _json(p: dict[str, Any], key: str, default: Any) -> Any:
    value = p.get(key)
    if value is None:
        return default
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ApiError(400, f"Bad Request: can't parse {key} JSON object") from None
    return value


def _int(p: dict[str, Any], key: str, default: int) -> int:
    try:
        return int(p.get(key, default))
    except (TypeError, ValueError):
        raise ApiError(400, f"Bad Request: invalid {key}") from None


def _bool(p: dict[str, Any], key: str) -> bool:
    value = p.get(key)
    return value is True or str(value).lower() in ("true", "1")


def _buttons(p: dict[str, Any]) -> tuple[tuple[Button, ...], ...]:
    markup = _json(p, "reply_markup", {}) or {}
    return tuple(tuple(Button(b["text"], b.get("callback_data", "")) for b in row)
                 for row in markup.get("inline_keyboard", []))


def _reply_error(e: ApiError) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": e.code, "description": e.description}
    if e.parameters:
        body["parameters"] = e.parameters
    return web.json_response(body, status=e.code)
