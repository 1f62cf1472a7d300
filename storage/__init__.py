"""Persistence: one aiosqlite repository and the frozen records it returns."""

from storage.errors import SchemaTooNew, StorageError, StorageFull
from storage.incidents import CoverageRecord, IncidentRecord, IncidentStore
from storage.models import CheckRecord, CheckStatus, Metric, RunRecord, RunStatus
from storage.outbox import Hold, HoldReason, OutboxRow, OutboxStore, OutKind, OutMessage, OutStatus
from storage.repository import Repository

__all__ = [
    "CheckRecord",
    "CheckStatus",
    "CoverageRecord",
    "Hold",
    "HoldReason",
    "IncidentRecord",
    "IncidentStore",
    "Metric",
    "OutKind",
    "OutMessage",
    "OutStatus",
    "OutboxRow",
    "OutboxStore",
    "Repository",
    "RunRecord",
    "RunStatus",
    "SchemaTooNew",
    "StorageError",
    "StorageFull",
]
