"""Typed lifecycle events that IBKRClient publishes, and the tiny bus that carries them.

Every event carries two clocks: ``at`` (wall clock, UTC) for people and reports, and ``mono``
(``time.monotonic()``) for measuring durations that must not jump with NTP adjustments.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar

from bot.queues import DropOldestQueue

log = logging.getLogger(__name__)
STREAM_SIZE = 1000  # events a stream holds for a slow reader; a check reads them as they come


@dataclass(frozen=True, kw_only=True)
class ClientEvent:
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    mono: float = field(default_factory=time.monotonic)

    @property
    def kind(self) -> str:
        """Stable snake-case name, used as the stored event kind."""
        name = type(self).__name__
        return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


class DisconnectReason(StrEnum):
    PEER_CLOSED = "peer closed"
    RESET = "connection reset"
    HEARTBEAT_TIMEOUT = "heartbeat timeout"
    LOCAL = "local disconnect"
    OTHER = "socket error"


class NoticeKind(StrEnum):
    LINK_LOST = "link to IB lost"
    SERVER_BROKEN = "link to IB broken, restoring"  # 2110
    LINK_RESTORED = "link to IB restored, data kept"  # 1102
    LINK_RESTORED_DATA_LOST = "link to IB restored, data lost"  # 1101
    FARM_OK = "data farm OK"
    FARM_BROKEN = "data farm broken"
    FARM_CONNECTING = "data farm connecting"
    FARM_INACTIVE = "data farm inactive"
    READ_ONLY = "API read-only"
    OTHER = "notice"
    ERROR = "error"  # a request's error, not a notice about the Gateway's state

    @property
    def is_link_down(self) -> bool:
        return self in (NoticeKind.LINK_LOST, NoticeKind.SERVER_BROKEN)

    @property
    def is_link_back(self) -> bool:
        return self in (NoticeKind.LINK_RESTORED, NoticeKind.LINK_RESTORED_DATA_LOST)


@dataclass(frozen=True, kw_only=True)
class Connected(ClientEvent):
    server_version: int
    accounts: tuple[str, ...]
    connection_time: str


@dataclass(frozen=True, kw_only=True)
class Disconnected(ClientEvent):
    reason: DisconnectReason
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class Reconnecting(ClientEvent):
    attempt: int
    max_attempts: int
    delay: float


@dataclass(frozen=True, kw_only=True)
class Reconnected(ClientEvent):
    downtime: float
    attempts: int


@dataclass(frozen=True, kw_only=True)
class ReconnectGaveUp(ClientEvent):
    attempts: int
    downtime: float
    last_error: str


@dataclass(frozen=True, kw_only=True)
class ReconnectFailedAttempt(ClientEvent):
    attempt: int
    error: str
    # True when the Gateway accepted the connection but its API was not ready yet (still logging
    # in): expected during a restart, retried at once, and not counted against the attempts.
    gateway_starting: bool = False


@dataclass(frozen=True, kw_only=True)
class GatewayNotice(ClientEvent):
    code: int
    message: str
    notice: NoticeKind
    farm: str = ""
    meaning: str = ""  # one sentence in words, from bot.ibkr.notices.explain


@dataclass(frozen=True, kw_only=True)
class Heartbeat(ClientEvent):
    """One answered (rtt set) or missed (rtt None) reqCurrentTime round trip."""

    rtt: float | None


E = TypeVar("E", bound=ClientEvent)
Listener = Callable[[ClientEvent], None]


class EventBus:
    """Synchronous fan-out of events to callbacks and async queues.

    Callbacks run inline (they must be quick and must not raise; a raising one is logged and
    kept), queues let a coroutine ``await`` the next event of a type without polling.
    """

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add a callback; returns the function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def emit(self, event: ClientEvent) -> None:
        log.debug("event %s", event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("event listener %r failed on %s", listener, event.kind)

    @contextlib.asynccontextmanager
    async def stream(self) -> AsyncIterator[asyncio.Queue[ClientEvent]]:
        """A queue receiving every event emitted while the context is open."""
        queue: DropOldestQueue[ClientEvent] = DropOldestQueue(STREAM_SIZE, "event stream")
        unsubscribe = self.subscribe(queue.put_nowait)
        try:
            yield queue
        finally:
            unsubscribe()


async def next_event(queue: asyncio.Queue[ClientEvent], kind: type[E] | tuple[type[E], ...],
                     timeout: float | None) -> E:
    """Wait for the next event of ``kind`` (a class, or two) on a queue from :meth:`EventBus.stream`."""
    async with asyncio.timeout(timeout):
        while True:
            event = await queue.get()
            if isinstance(event, kind):
                return event
