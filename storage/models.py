"""The contract with storage: the statuses, and the frozen records storage hands back.

Storage is the lowest layer, so the status enums live here and bot uses them (it never defines
its own): one definition for the checks, the runner, the repository and the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


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


@dataclass(frozen=True)
class CheckRecord:
    id: int
    run_id: int
    seq: int
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
    status: RunStatus
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
    status: RunStatus
    started_by: str
    origin: str
    config: dict[str, Any]
    started_at: datetime
    ended_at: datetime | None
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
