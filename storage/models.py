"""The contract with storage: the statuses, the frozen records storage hands back, and what the
repository's parts (runs, outbox, watch) share: stored times and the one connection.

Storage is the lowest layer, so the status enums live here and bot uses them (it never defines
its own): one definition for the checks, the runner, the repository and the report.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import aiosqlite
from aiosqlite.context import Result

Params = Sequence[Any] | Mapping[str, Any]


def ts(at: datetime) -> str:
    """A time as stored: fixed-width ISO UTC text, so text order is time order."""
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at!r}: store aware UTC times")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def now() -> str:
    return ts(datetime.now(UTC))


def when(text: str | None) -> datetime | None:
    """An optional stored time: the end of what has not ended."""
    return datetime.fromisoformat(text) if text else None


class Database:
    """The repository's connections, as each of its parts runs statements on them.

    One connection writes, one transaction at a time (the repository's lock). A task inside its
    transaction (``in_transaction``) runs every statement there, and reads its own writes. Every
    other read goes to a second, read-only connection which, under WAL, sees only committed data:
    no read anywhere sees another task's open transaction, and no read waits for a writer.
    """

    def __init__(self, writer: aiosqlite.Connection, in_transaction: Callable[[], bool]) -> None:
        self.writer = writer
        self.reader: aiosqlite.Connection | None = None  # None: all on the writer (opening; a read-only file)
        self._in_transaction = in_transaction

    def _here(self) -> aiosqlite.Connection:
        return self.writer if self.reader is None or self._in_transaction() else self.reader

    def execute(self, sql: str, params: Params = ()) -> Result[aiosqlite.Cursor]:
        return self._here().execute(sql, params)

    async def execute_fetchall(self, sql: str, params: Params = ()) -> Iterable[aiosqlite.Row]:
        return await self._here().execute_fetchall(sql, params)

    async def close(self) -> None:
        if self.reader is not None:
            await self.reader.close()
        await self.writer.close()


class Store:
    """A part of the repository on its connections (one writer). Every write is one transaction of
    the repository's (``committed``): it never commits another task's half-way, and it lands even
    if its caller is cancelled meanwhile. Its reads see only what is committed."""

    def __init__(self, db: Database, committed: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]) -> None:
        self._db = db
        self._committed = committed

    async def _execute(self, sql: str, params: Sequence[object] = ()) -> aiosqlite.Cursor:
        """One statement in a transaction of its own."""
        return await self._committed(lambda: self._db.execute(sql, params))


class CheckStatus(StrEnum):
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    INTERRUPTED = "interrupted"  # its process went away before it finished


class RunStatus(StrEnum):
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class Metric:
    name: str
    value: float
    unit: str


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    """What a check measured and decided: what it returns, and (as a CheckRecord) what is stored."""

    name: str
    status: CheckStatus
    started_at: datetime
    ended_at: datetime | None
    metrics: tuple[Metric, ...] = ()
    findings: tuple[str, ...] = ()
    error: str | None = None
    # (seconds since the check started, RTT in seconds or None for a missed heartbeat)
    series: tuple[tuple[float, float | None], ...] = ()
    hints: tuple[str, ...] = ()  # what to try next, when it did not pass
    warnings: tuple[str, ...] = ()  # passed, but worth a person's attention
    # Non-numeric facts a check reports by name (e.g. the managed accounts), beside its metrics.
    facts: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == CheckStatus.PASSED

    def metric(self, name: str) -> float | None:
        return next((m.value for m in self.metrics if m.name == name), None)


@dataclass(frozen=True, kw_only=True)
class CheckRecord(CheckResult):
    id: int
    run_id: int
    seq: int


@dataclass(frozen=True)
class EventRecord:
    id: int
    run_id: int
    at: datetime
    kind: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LogRecord:
    id: int
    run_id: int
    at: datetime
    level: str
    logger: str
    message: str


@dataclass(frozen=True)
class _Run:
    id: int
    kind: str
    gateway: str
    status: RunStatus
    started_by: str
    origin: str
    started_at: datetime
    ended_at: datetime | None


@dataclass(frozen=True)
class RunSummary(_Run):
    checks_total: int
    checks_passed: int


@dataclass(frozen=True)
class RunRecord(_Run):
    config: dict[str, Any] = field(default_factory=dict)
    checks: tuple[CheckRecord, ...] = ()
    events: tuple[EventRecord, ...] = ()
    logs: tuple[LogRecord, ...] = ()

    def check(self, name: str) -> CheckRecord | None:
        """The last attempt of a check in this run."""
        return next((c for c in reversed(self.checks) if c.name == name), None)


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: datetime
    chat_id: int | None
    user_id: int | None
    username: str
    action: str
    allowed: bool
    detail: str
