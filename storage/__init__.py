"""Persistence: one aiosqlite repository and the frozen records it returns."""

from storage.models import (
    CHECK_STATUSES,
    RUN_STATUSES,
    AuditRecord,
    CheckRecord,
    EventRecord,
    LogRecord,
    Metric,
    RunRecord,
    RunSummary,
)
from storage.outbox import ChatBacklog, Hold, HoldReason, OutboxRow, OutboxStore, OutKind, OutMessage, OutStatus
from storage.repository import Repository, SchemaTooNew

__all__ = [
    "CHECK_STATUSES", "RUN_STATUSES", "AuditRecord", "CheckRecord", "EventRecord", "LogRecord", "Metric",
    "Repository", "RunRecord", "RunSummary", "SchemaTooNew",
    "ChatBacklog", "Hold", "HoldReason", "OutKind", "OutMessage", "OutStatus", "OutboxRow", "OutboxStore",
]
