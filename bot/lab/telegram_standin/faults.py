"""Misbehaviour on demand for the Bot API stand-in: the ways Telegram fails a bot, for tests and the bench.

One rule list: each :class:`Fault` matches a method (by default the three send methods) and
optionally a chat, fires ``times`` times (None: until cleared) and answers as Telegram would:
HTTP 500, a request held and never answered, 429 with retry_after, 403 blocked/kicked, 400 with
migrate_to_chat_id, 400 message is too long. Refusing connections altogether is
``BotApiStandIn.refuse_connections()`` / ``accept_connections()`` (the port closes).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import StrEnum

from bot.lab.telegram_standin.params import ApiError

log = logging.getLogger(__name__)
SEND_METHODS = frozenset({"sendmessage", "senddocument", "sendphoto"})


class FaultKind(StrEnum):
    SERVER_ERROR = "500"
    HOLD = "hold"  # keep the request for ``seconds``, then hang up without doing it
    RETRY_AFTER = "429"
    FORBIDDEN = "403"
    MIGRATE = "migrate"
    TOO_LONG = "too long"
    LATE = "late"  # do the request at once, answer it ``seconds`` later (a slow link back)


class Hangup(Exception):
    """Close the connection without an answer (the request was never done)."""


@dataclass
class Fault:
    kind: FaultKind
    methods: frozenset[str] = SEND_METHODS  # lower case; empty: every method
    chat_id: int | None = None
    times: int | None = 1  # None: until cleared
    seconds: float = 1.0  # retry_after for 429, how long to hold for HOLD, to answer late for LATE
    to_chat_id: int | None = None  # for MIGRATE

    def matches(self, method: str, chat_id: int | None) -> bool:
        return ((not self.methods or method in self.methods) and (self.chat_id is None or self.chat_id == chat_id)
                and (self.times is None or self.times > 0))


class Faults:
    def __init__(self) -> None:
        self.rules: list[Fault] = []

    def add(self, kind: FaultKind, *, method: str | None = None, chat_id: int | None = None, times: int | None = 1,
            seconds: float = 1.0, to_chat_id: int | None = None) -> Fault:
        """The next ``times`` matching requests fail as ``kind``; method "*" matches every method."""
        if kind is FaultKind.MIGRATE and to_chat_id is None:
            raise ValueError("a MIGRATE fault needs to_chat_id")
        methods = SEND_METHODS if method is None else frozenset() if method == "*" else frozenset({method.lower()})
        fault = Fault(kind, methods, chat_id, times, seconds, to_chat_id)
        self.rules.append(fault)
        return fault

    def clear(self) -> None:
        self.rules.clear()

    async def apply(self, method: str, chat_id: int | None, chat_is_group: bool) -> float:
        """Raise the first matching rule's ApiError, or Hangup for HOLD; returns how late to answer."""
        method = method.lower()
        fault = next((f for f in self.rules if f.matches(method, chat_id)), None)
        if fault is None:
            return 0.0
        if fault.times is not None:
            fault.times -= 1
        log.info("stand-in fault: %s on %s (chat %s)", fault.kind, method, chat_id)
        match fault.kind:
            case FaultKind.SERVER_ERROR:
                raise ApiError(500, "Internal Server Error")
            case FaultKind.HOLD:
                await asyncio.sleep(fault.seconds)
                raise Hangup
            case FaultKind.RETRY_AFTER:
                after = max(1, round(fault.seconds))  # Telegram says whole seconds
                raise ApiError(429, f"Too Many Requests: retry after {after}", {"retry_after": after})
            case FaultKind.FORBIDDEN:
                raise ApiError(403, "Forbidden: bot was kicked from the group chat" if chat_is_group
                               else "Forbidden: bot was blocked by the user")
            case FaultKind.MIGRATE:
                raise ApiError(400, "Bad Request: group chat was upgraded to a supergroup chat",
                               {"migrate_to_chat_id": fault.to_chat_id})
            case FaultKind.TOO_LONG:
                raise ApiError(400, "Bad Request: message is too long")
            case FaultKind.LATE:
                return fault.seconds
        return 0.0
