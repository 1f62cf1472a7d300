"""Writes a run's events and log lines to storage as they happen.

Events and log records arrive from synchronous callbacks (the client's event bus, logging
handlers); they are queued and written by one task, in order, a fraction of a second later,
so a crash loses at most that fraction and the loop never waits on the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from bot.ibkr.events import (
    ClientEvent,
    Connected,
    Disconnected,
    GatewayNotice,
    Heartbeat,
    Reconnected,
    ReconnectFailedAttempt,
    ReconnectGaveUp,
    Reconnecting,
)
from bot.queues import DropOldestQueue
from storage import Repository, StorageError

# Which run the current task works for: lets one handler serve concurrent runs.
current_run: ContextVar[int | None] = ContextVar("current_run", default=None)

CAPTURED_LOGGERS = ("bot", "ib_async", "storage")
FLUSH_INTERVAL = 0.2
JOURNAL_SIZE = 10_000  # queued log lines, samples and events; a soak writes a few per second


def describe(event: ClientEvent) -> str:
    """One line a person reads, for every kind of event."""
    match event:
        case Connected():
            return f"Connected: server version {event.server_version}, accounts {', '.join(event.accounts)}"
        case Disconnected():
            return f"Disconnected ({event.reason})" + (f": {event.detail}" if event.detail else "")
        case Reconnecting():
            return f"Reconnecting: attempt {event.attempt}/{event.max_attempts}"
        case ReconnectFailedAttempt():
            return f"Reconnect attempt {event.attempt} failed: {event.error}"
        case Reconnected():
            return f"Reconnected after {event.downtime:.1f} s down, {event.attempts} attempt(s)"
        case ReconnectGaveUp():
            return f"Gave up reconnecting after {event.attempts} attempt(s), {event.downtime:.1f} s: {event.last_error}"
        case GatewayNotice():
            return f"Gateway notice {event.code}: {event.message}"
        case Heartbeat():
            return "Heartbeat missed" if event.rtt is None else f"Heartbeat {event.rtt * 1000:.1f} ms"
    fields = ", ".join(f"{k}={v}" for k, v in _data(event).items())
    return f"{event.kind}: {fields}"


def _data(event: ClientEvent) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        return value.value if isinstance(value, Enum) else list(value) if isinstance(value, tuple) else value

    return {f.name: plain(getattr(event, f.name)) for f in dataclasses.fields(event) if f.name not in ("at", "mono")}


class LogSink(logging.Handler):
    """While open on the loggers a run captures, hands each record it accepts (``level`` and up,
    ``accept`` true), with its text, to ``sink``."""

    def __init__(self, sink: Callable[[logging.LogRecord, str], None], level: int,
                 accept: Callable[[logging.LogRecord], bool]) -> None:
        super().__init__(level)
        self.sink = sink
        self.addFilter(accept)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.sink(record, self.format(record))

    def __enter__(self) -> LogSink:
        for name in CAPTURED_LOGGERS:
            logging.getLogger(name).addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in CAPTURED_LOGGERS:
            logging.getLogger(name).removeHandler(self)


class RunJournal:
    """Async context: while open, the run's events and log lines flow into storage."""

    def __init__(self, repo: Repository, run_id: int) -> None:
        self.repo = repo
        self.run_id = run_id
        # Flushed five times a second; a storage stall drops the oldest lines (counted, logged), never memory.
        self._queue: DropOldestQueue[tuple[str, Any]] = DropOldestQueue(JOURNAL_SIZE, f"run {run_id} journal")
        self._logs = LogSink(self._log, logging.INFO, lambda _: current_run.get() == run_id)
        self._writer: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._token: Any = None
        self._failed = False

    def event(self, event: ClientEvent) -> None:
        if isinstance(event, Heartbeat):
            # Every heartbeat is a sample, stored as it comes so that a crashed soak keeps them;
            # only a missed one is also news.
            self._queue.put_nowait(("sample", (event.at, event.rtt)))
            if event.rtt is not None:
                return
        self._queue.put_nowait(("event", event))

    def _log(self, record: logging.LogRecord, text: str) -> None:
        at = datetime.fromtimestamp(record.created, UTC)
        self._queue.put_nowait(("log", (at, record.levelname, record.name, text)))

    async def __aenter__(self) -> RunJournal:
        self._token = current_run.set(self.run_id)
        self._logs.__enter__()
        self._writer = asyncio.create_task(self._write_loop(), name=f"journal run {self.run_id}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._logs.__exit__()
        self._closing.set()
        if self._writer is not None:
            await self._writer  # its last pass writes whatever is still queued
        current_run.reset(self._token)

    async def _write_loop(self) -> None:
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_INTERVAL):  # unlike wait_for, spawns no task
                    await self._closing.wait()
            try:
                await self._flush()
            except StorageError as e:
                # Never let a storage hiccup kill the run; the lines are lost, the run goes on.
                # Said once: a full disk would otherwise repeat it five times a second.
                if not self._failed:
                    logging.getLogger(__name__).error("could not store run %s's events and logs: %s", self.run_id, e)
                self._failed = True
            except Exception:
                logging.getLogger(__name__).exception("could not write run %s journal", self.run_id)

    async def _flush(self) -> None:
        logs: list[tuple[datetime, str, str, str]] = []
        samples: list[tuple[datetime, float | None]] = []
        while not self._queue.empty():
            kind, item = self._queue.get_nowait()
            if kind == "log":
                logs.append(item)
            elif kind == "sample":
                samples.append(item)
            else:
                await self._write_batches(logs, samples)
                await self.repo.add_event(self.run_id, item.at, item.kind, describe(item), _data(item))
        await self._write_batches(logs, samples)

    async def _write_batches(self, logs: list[tuple[datetime, str, str, str]],
                             samples: list[tuple[datetime, float | None]]) -> None:
        """Write and empty the batches, so that what is stored keeps the order it came in."""
        if logs or samples:
            async with self.repo.transaction():  # one commit for both, not two
                await self.repo.add_logs(self.run_id, logs)
                await self.repo.add_samples(self.run_id, samples)
        logs.clear()
        samples.clear()
