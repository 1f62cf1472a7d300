"""Persistence: one aiosqlite repository and the frozen records it returns."""

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
from storage.models import (
    AuditRecord,
    CheckRecord,
    CheckStatus,
    EventRecord,
    LogRecord,
    Metric,
    RunRecord,
    RunStatus,
    RunSummary,
)
from storage.outbox import ChatBacklog, Hold, HoldReason, OutboxRow, OutboxStore, OutKind, OutMessage, OutStatus
from storage.repository import Repository

__all__ = [
    "AuditRecord",
    "ChatBacklog",
    "CheckRecord",
    "CheckStatus",
    "CoverageRecord",
    "DatabaseBusy",
    "DatabaseReadOnly",
    "DatabaseUnavailable",
    "EventRecord",
    "Hold",
    "HoldReason",
    "IncidentRecord",
    "IncidentStore",
    "LogRecord",
    "Metric",
    "NotADatabase",
    "OutKind",
    "OutMessage",
    "OutStatus",
    "OutboxRow",
    "OutboxStore",
    "Repository",
    "RunRecord",
    "RunStatus",
    "RunSummary",
    "SchemaTooNew",
    "StorageError",
    "StorageFull",
]
