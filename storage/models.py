"""What storage hands back: frozen records of plain types (storage knows nothing of bot)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

RUN_STATUSES = frozenset({"running", "passed", "failed", "error", "cancelled", "interrupted"})
CHECK_STATUSES = frozenset({"running", "passed", "failed", "error", "cancelled", "skipped", "interrupted"})


@dataclass(frozen=True)
class Metric:
    name: str
    value: float
    unit: str


@dataclass(frozen=True)
class CheckRecord:
    id: int
    run_id: int
    seq: int
    name: str
    status: str
    started_at: datetime
    ended_at: datetime | None
    metrics: tuple[Metric, ...] = ()
    findings: tuple[str, ...] = ()
    error: str | None = None
    # (seconds since the check started, RTT in seconds or None for a missed heartbeat)
    series: tuple[tuple[float, float | None], ...] = ()


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
class RunSummary:
    id: int
    kind: str
    gateway: str
    status: str
    started_by: str
    origin: str
    started_at: datetime
    ended_at: datetime | None
    checks_total: int
    checks_passed: int


@dataclass(frozen=True)
class RunRecord:
    id: int
    kind: str
    gateway: str
    status: str
    started_by: str
    origin: str
    config: dict[str, Any]
    started_at: datetime
    ended_at: datetime | None
    checks: tuple[CheckRecord, ...] = ()
    events: tuple[EventRecord, ...] = ()
    logs: tuple[LogRecord, ...] = ()


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
