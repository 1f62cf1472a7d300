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
from storage.errors import (
    DatabaseBusy,
    DatabaseReadOnly,
    DatabaseUnavailable,
    NotADatabase,
    SchemaTooNew,
    StorageError,
    StorageFull,
)
from storage.incidents import CoverageRecord, IncidentRecord, IncidentStore
from storage.outbox import ChatBacklog, Hold, HoldReason, OutboxRow, OutboxStore, OutKind, OutMessage, OutStatus
from storage.repository import Repository

__all__ = [
    "CHECK_STATUSES", "RUN_STATUSES", "AuditRecord", "CheckRecord", "EventRecord", "LogRecord", "Metric",
    "Repository", "RunRecord", "RunSummary", "SchemaTooNew", "StorageError", "DatabaseBusy", "DatabaseReadOnly",
    "DatabaseUnavailable", "NotADatabase", "StorageFull",
    "CoverageRecord", "IncidentRecord", "IncidentStore",
    "ChatBacklog", "Hold", "HoldReason", "OutKind", "OutMessage", "OutStatus", "OutboxRow", "OutboxStore",
]
