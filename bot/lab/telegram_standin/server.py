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
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from aiohttp import web

from bot.lab.telegram_standin.faults import Faults, Hangup
from bot.lab.telegram_standin.formatting import parse, with_detected
from bot.lab.telegram_standin.model import (
    ApiCall,
    BotMessage,
    Button,
    CallbackAnswer,
    ChangeKind,
    Chat,
    ChatChange,
    ChatType,
    Command,
    MessageKind,
    User,
)
from bot.lab.telegram_standin.params import (
    MAX_UPLOAD,
    ApiError,
    Params,
    bad_request,
    button,
    not_found,
    read_params,
    reply_error,
)
from bot.lab.telegram_standin.render import dump_line, message_json, png_size, user_message
from bot.queues import DropOldestQueue
from handlers.telegram_html import Entity, FormatError, utf16_len

log = logging.getLogger(__name__)

SUBSCRIBER_SIZE = 1000  # changes a watcher (a test, the terminal chat) may lag behind
MAX_TEXT = 4096  # UTF-16 code units, after entity parsing
MAX_CAPTION = 1024
NOT_MODIFIED = ("Bad Request: message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message")
QUERY_INVALID = "Bad Request: query is too old and response timeout expired or query ID is invalid"
CONFLICT = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
_TOKEN_SHAPE = re.compile(r"\d+:[\w-]+")
_COMMAND_NAME = re.compile(r"[a-z0-9_]{1,32}")


class BotApiStandIn:
    """Serve ``/bot<token>/<method>`` on a free loopback port; point PTB's ``base_url`` at :attr:`base_url`."""

    def __init__(self, token: str = "123456:TEST-TOKEN") -> None:
        self.host = "127.0.0.1"
        self.port = 0  # a free one, kept across refuse_connections() / accept_connections()
        self.token = token
        self.bot_user = {"id": int(token.split(":")[0]), "is_bot": True, "first_name": "gwbot",
                         "username": "gwbot_test_bot"}
        self.users: dict[int, User] = {}
        self.chats: dict[int, Chat] = {}
        self.calls: list[ApiCall] = []
        self.callback_answers: list[CallbackAnswer] = []
        self.commands: list[Command] = []  # the menu setMyCommands set: gwbot sets one (no scopes, no languages)
        self._messages: dict[int, dict[int, BotMessage]] = {}
        self._user_messages: dict[int, dict[int, dict[str, Any]]] = {}  # what people sent, for replies
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._updates: list[dict[str, Any]] = []  # {"update_id": N, "message" | "callback_query" ...: payload}
        self._update_ids = itertools.count(1)
        self._callback_ids = itertools.count(1)
        self._queries: dict[str, CallbackAnswer] = {}  # the answer, before the bot gives it
        self._poll: asyncio.Future[None] | None = None  # the pending long poll, woken by an update
        self._subscribers: list[asyncio.Queue[ChatChange]] = []
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._closing = False
        self.faults = Faults()  # misbehaviour on demand (tests, bench): see faults.py

    # ------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        """The value for PTB's ``base_url`` (PTB appends the token and the method)."""
        return f"http://{self.host}:{self.port}/bot"

    async def start(self) -> None:
        self._closing = False
        app = web.Application(client_max_size=MAX_UPLOAD)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_route("*", "/{tail:.*}", not_found)
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
        message = user_message(chat, person, self._next_message_id(chat_id), text)
        self._user_messages.setdefault(chat_id, {})[message["message_id"]] = message
        return self._enqueue("message", message)

    def edit_text(self, chat_id: int, user_id: int, message_id: int, text: str) -> int:
        """A person edits one of their messages (an ``edited_message`` update); returns the update id."""
        chat, person = self._chat_of(chat_id), self._user_of(user_id)
        if message_id not in self._user_messages.get(chat_id, {}):
            raise ValueError(f"no message {message_id} from a person in chat {chat_id}")
        message = user_message(chat, person, message_id, text)
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
        self._queries[query_id] = CallbackAnswer(query_id, chat_id, message_id, user_id)
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
        queue: DropOldestQueue[ChatChange] = DropOldestQueue(SUBSCRIBER_SIZE, "stand-in subscriber")
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
                    if (change.kind is not ChangeKind.ANSWER and chat_id in (None, change.message.chat_id)
                            and predicate(change.message)):
                        return change.message
        except TimeoutError:
            where = "any chat" if chat_id is None else f"chat {chat_id}"
            raise TimeoutError(f"no matching bot message in {where} within {timeout:g} s; recent messages:\n"
                               f"{self.dump(chat_id)}") from None
        finally:
            self.unsubscribe(queue)

    def dump(self, chat_id: int | None = None, last: int = 8) -> str:
        """The last few bot messages, one line each, for failure messages."""
        chats = [chat_id] if chat_id is not None else list(self._messages)
        return "\n".join(dump_line(m) for cid in chats for m in self.messages(cid)[-last:]) or "  (no messages)"

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

    async def _fault(self, method: str, p: Params) -> float:
        value = p.text("chat_id") or ""
        chat_id = int(value) if value.isascii() and value.lstrip("-").isdigit() else None
        chat = self.chats.get(chat_id) if chat_id is not None else None
        return await self.faults.apply(method, chat_id, chat is not None and chat.type is not ChatType.PRIVATE)

    # ----------------------------------------------------------------- HTTP
    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        token = request.match_info["token"]
        if not _TOKEN_SHAPE.fullmatch(token):
            return reply_error(ApiError(404, "Not Found"))  # Telegram: a malformed token is not a bot at all
        if token != self.token:
            return reply_error(ApiError(401, "Unauthorized"))
        call = ApiCall(method, {}, time.monotonic(), 0)
        self.calls.append(call)
        try:
            params = await read_params(request)
            call.params = params.shown()
            route = ROUTES.get(method.lower())
            if route is None:
                raise ApiError(404, "Not Found")
            late = await self._fault(method, params)
            result = await route(self, params)
            await asyncio.sleep(late)
            call.status = 200
            return web.json_response({"ok": True, "result": result})
        except asyncio.CancelledError:
            call.status = 499  # the client hung up (nginx's code for it)
            raise
        except Hangup:
            call.status = 444  # closed without an answer (nginx's code for it)
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=444)
        except ApiError as e:
            call.status = e.code
            log.debug("stand-in %s -> %s %s", method, e.code, e.description)
            return reply_error(e)
        except Exception:
            log.exception("stand-in: %s failed", method)
            call.status = 500
            return reply_error(ApiError(500, "Internal Server Error"))

    # ------------------------------------------------------------- methods (ROUTES below)
    async def _m_getme(self, _: Params) -> dict[str, Any]:
        return {**self.bot_user, "can_join_groups": True, "can_read_all_group_messages": False,
                "supports_inline_queries": False}

    async def _m_deletewebhook(self, p: Params) -> bool:
        if p.flag("drop_pending_updates"):
            self._updates.clear()
        return True

    async def _m_getupdates(self, p: Params) -> list[dict[str, Any]]:
        offset = p.integer("offset") or 0
        limit = min(max(p.integer("limit") or 100, 1), 100)
        timeout = max(p.number("timeout") or 0.0, 0.0)
        self._terminate_poll()  # a newer getUpdates ends an older one, as on Telegram
        if offset:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        if not self._updates and timeout > 0 and not self._closing:
            waiter = self._poll = asyncio.get_running_loop().create_future()
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await waiter
            finally:
                if self._poll is waiter:
                    self._poll = None
        return self._updates[:limit]

    async def _m_sendmessage(self, p: Params) -> dict[str, Any]:
        chat_id = self._chat_id(p)
        text, entities = self._formatted(p, "text", MAX_TEXT)
        return self._new(p, chat_id, MessageKind.TEXT, text, entities)

    async def _m_editmessagetext(self, p: Params) -> dict[str, Any]:
        chat_id = self._chat_id(p)
        message_id = p.integer("message_id")
        if message_id is None:
            raise bad_request("message identifier is not specified")
        current = self.message(chat_id, message_id)
        if current is None:
            raise bad_request("message to edit not found")
        text, entities = self._formatted(p, "text", MAX_TEXT)
        if current.kind is not MessageKind.TEXT:
            raise bad_request("there is no text in the message to edit")
        # No reply_markup in an edit removes the inline keyboard, as on Telegram.
        return self._edit(current, text, entities, self._keyboard(p))

    async def _m_senddocument(self, p: Params) -> dict[str, Any]:
        return self._upload(p, MessageKind.DOCUMENT)

    async def _m_sendphoto(self, p: Params) -> dict[str, Any]:
        return self._upload(p, MessageKind.PHOTO)

    async def _m_answercallbackquery(self, p: Params) -> bool:
        query = self._queries.get(p.text("callback_query_id") or "")
        if query is None:
            raise bad_request(QUERY_INVALID.removeprefix("Bad Request: "))
        answer = replace(query, text=p.text("text") or "", show_alert=p.flag("show_alert"))
        self.callback_answers.append(answer)
        message = self.message(query.chat_id, query.message_id)
        if message is not None:
            self._notify(ChatChange(ChangeKind.ANSWER, message, answer))
        return True

    async def _m_setmycommands(self, p: Params) -> bool:
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
        self.commands = menu
        return True

    # ------------------------------------------------------------- helpers
    def _chat_of(self, chat_id: int) -> Chat:
        if chat_id not in self.chats:
            raise ValueError(f"unknown chat {chat_id}: create it with standin.user() or standin.group()")
        return self.chats[chat_id]

    def _user_of(self, user_id: int) -> User:
        if user_id not in self.users:
            raise ValueError(f"unknown user {user_id}: create them with standin.user()")
        return self.users[user_id]

    def _chat_id(self, p: Params) -> int:
        value = p.text("chat_id")
        if not value:
            raise bad_request("chat_id is empty")
        if not (value.isascii() and value.lstrip("-").isdigit()) or int(value) not in self.chats:
            raise bad_request("chat not found")
        return int(value)

    def _formatted(self, p: Params, field: str, limit: int) -> tuple[str, tuple[Entity, ...]]:
        # gwbot sends markup (parse_mode), never explicit entities.
        try:
            text, entities = parse(p.text(field) or "", p.text("parse_mode"))
        except FormatError as e:
            raise bad_request(str(e)) from None
        if utf16_len(text) > limit:
            raise bad_request("message is too long" if field == "text" else "message caption is too long")
        if field == "text" and not text:
            raise bad_request("message text is empty")
        return text, with_detected(text, entities)

    def _keyboard(self, p: Params) -> tuple[tuple[Button, ...], ...]:
        markup = p.decoded("reply_markup", "can't parse reply keyboard markup JSON object")
        if not markup:
            return ()
        if not isinstance(markup, dict):
            raise bad_request("can't parse reply keyboard markup JSON object")
        rows = markup.get("inline_keyboard")
        if rows is None:
            return ()  # a reply keyboard or force_reply: people see it, but it has no callback buttons
        return tuple(tuple(button(b) for b in row) for row in rows)

    def _reply_to(self, p: Params, chat_id: int) -> int | None:
        # PTB sends reply_parameters only (Bot API 7.0), never the older reply_to_message_id.
        reply = p.decoded("reply_parameters", "can't parse reply parameters JSON object")
        if not isinstance(reply, dict) or reply.get("message_id") is None:
            return None
        message_id = reply["message_id"]
        if message_id in self._messages.get(chat_id, {}) or message_id in self._user_messages.get(chat_id, {}):
            return int(message_id)
        if reply.get("allow_sending_without_reply"):
            return None
        raise bad_request("message to be replied not found")

    def _edit(self, current: BotMessage, text: str, entities: tuple[Entity, ...],
              buttons: tuple[tuple[Button, ...], ...]) -> dict[str, Any]:
        if (text, entities, buttons) == (current.text, current.entities, current.buttons):
            raise ApiError(400, NOT_MODIFIED)
        return self._store(replace(current, text=text, entities=entities, buttons=buttons, edits=current.edits + 1,
                                   edited_at=time.monotonic(), edit_date=int(time.time())), edit=True)

    def _upload(self, p: Params, kind: MessageKind) -> dict[str, Any]:
        chat_id = self._chat_id(p)
        field = str(kind)
        upload = p.upload(field)
        if upload is None:  # gwbot uploads its files: none are stored by file id here
            raise bad_request(f"there is no {field} in the request")
        size = None
        if kind is MessageKind.PHOTO:
            size = png_size(upload.data)
            if size is None:
                raise bad_request("IMAGE_PROCESS_FAILED")
        caption, entities = self._formatted(p, "caption", MAX_CAPTION)
        return self._new(p, chat_id, kind, caption, entities, file_name=upload.name, file_bytes=upload.data,
                         mime_type=upload.mime, size=size)

    def _new(self, p: Params, chat_id: int, kind: MessageKind, text: str, entities: tuple[Entity, ...],
             **file: Any) -> dict[str, Any]:
        return self._store(BotMessage(self._next_message_id(chat_id), chat_id, kind, text, self._keyboard(p),
                                      disable_notification=p.flag("disable_notification"), sent_at=time.monotonic(),
                                      entities=entities, reply_to_message_id=self._reply_to(p, chat_id),
                                      date=int(time.time()), **file))

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
        self._updates.append({"update_id": update_id, kind: payload})
        self._wake_poll()
        return update_id

    def _wake_poll(self) -> None:
        if self._poll is not None and not self._poll.done():
            self._poll.set_result(None)

    def _terminate_poll(self) -> None:
        if self._poll is not None and not self._poll.done():
            self._poll.set_exception(ApiError(409, CONFLICT))
        self._poll = None

    def _message_json(self, m: BotMessage, *, nested: bool = False) -> dict[str, Any]:
        reply_to = None
        if m.reply_to_message_id is not None and not nested:
            # Telegram nests the replied-to message one level deep only.
            replied = self.message(m.chat_id, m.reply_to_message_id)
            reply_to = (self._message_json(replied, nested=True) if replied is not None else
                        self._user_messages.get(m.chat_id, {}).get(m.reply_to_message_id))
        return message_json(m, self.bot_user, self.chats[m.chat_id], reply_to)


Route = Callable[[BotApiStandIn, Params], Awaitable[Any]]
# The Bot API methods gwbot calls, and those PTB's polling calls around them (the _m_ methods,
# by lower-case name). Any other answers 404, as Telegram does for a method it does not know.
ROUTES: dict[str, Route] = {name.removeprefix("_m_"): method for name, method in vars(BotApiStandIn).items()
                            if name.startswith("_m_")}
