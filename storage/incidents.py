"""The watch's stored outages and watched spans: what /uptime is computed from.

An incident is written when it opens and again whenever it changes, keyed by the watch's
incident key, so the row is current within a moment and survives a crash. A coverage span says
"gwbot was watching this Gateway from ... to at least ...": time outside every span is not
counted at all, and an incident left open by a stopped gwbot is closed at its last sign of life.
Times are stored as fixed-width ISO UTC text, so text order is time order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiosqlite

# An incident open when gwbot stopped: we know it lasted at least until we stopped looking.
ENDED_UNWATCHED = "gwbot stopped watching"


def _ts(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at!r}: store aware UTC times")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _dt_or_none(text: str | None) -> datetime | None:
    """For the nullable columns (an open incident's end, an unacknowledged incident's ack)."""
    return _dt(text) if text else None


@dataclass(frozen=True)
class IncidentRecord:
    key: str
    gateway: str
    started_at: datetime
    ended_at: datetime | None
    cause: str
    category: str
    layer: str
    expected_window: str | None = None
    test: str | None = None
    alerted: bool = False
    acked_by: str | None = None
    acked_at: datetime | None = None
    recovery: str | None = None


@dataclass(frozen=True)
class CoverageRecord:
    id: int
    gateway: str
    started_at: datetime
    seen_at: datetime


_COLUMNS = ("key", "gateway", "started_at", "ended_at", "cause", "category", "layer", "expected_window", "test",
            "alerted", "acked_by", "acked_at", "recovery")


class IncidentStore:
    """Shares the Repository's connection (one writer): every write is one transaction of the
    repository's (``committed``), so it never commits another task's half-way, and a watch being
    stopped still stores its last update."""

    def __init__(self, db: aiosqlite.Connection,
                 committed: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]) -> None:
        self._db = db
        self._write = committed

    async def watch_started(self, gateway: str, at: datetime) -> int:
        """A new watched span; incidents a previous gwbot left open end at its last sign of life."""
        return await self._write(lambda: self._watch_started(gateway, at))

    async def _watch_started(self, gateway: str, at: datetime) -> int:
        row = await (await self._db.execute(
            "SELECT MAX(seen_at) FROM watch_coverage WHERE gateway = ?", (gateway,))).fetchone()
        last_seen = row[0] if row and row[0] else None
        await self._db.execute(
            "UPDATE watch_incidents SET ended_at = MAX(started_at, COALESCE(?, started_at)), recovery = ? "
            "WHERE gateway = ? AND ended_at IS NULL", (last_seen, ENDED_UNWATCHED, gateway))
        cur = await self._db.execute(
            "INSERT INTO watch_coverage (gateway, started_at, seen_at) VALUES (?, ?, ?)", (gateway, _ts(at), _ts(at)))
        return cur.lastrowid or 0

    async def watch_seen(self, coverage_id: int, at: datetime) -> None:
        await self._write(lambda: self._db.execute(
            "UPDATE watch_coverage SET seen_at = MAX(seen_at, ?) WHERE id = ?", (_ts(at), coverage_id)))

    async def save(self, r: IncidentRecord) -> None:
        values = (r.key, r.gateway, _ts(r.started_at), _ts(r.ended_at) if r.ended_at else None, r.cause, r.category,
                  r.layer, r.expected_window, r.test, int(r.alerted), r.acked_by,
                  _ts(r.acked_at) if r.acked_at else None, r.recovery)
        updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])
        await self._write(lambda: self._db.execute(
            f"INSERT INTO watch_incidents ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
            f"ON CONFLICT (key) DO UPDATE SET {updates}", values))

    async def incidents(self, gateway: str, since: datetime, until: datetime) -> list[IncidentRecord]:
        """Incidents overlapping [since, until), oldest first (open ones included)."""
        rows = await self._db.execute_fetchall(
            "SELECT * FROM watch_incidents WHERE gateway = ? AND started_at < ? AND (ended_at IS NULL OR ended_at > ?) "
            "ORDER BY started_at", (gateway, _ts(until), _ts(since)))
        return [IncidentRecord(
            key=r["key"], gateway=r["gateway"], started_at=_dt(r["started_at"]), ended_at=_dt_or_none(r["ended_at"]),
            cause=r["cause"], category=r["category"], layer=r["layer"], expected_window=r["expected_window"],
            test=r["test"], alerted=bool(r["alerted"]), acked_by=r["acked_by"], acked_at=_dt_or_none(r["acked_at"]),
            recovery=r["recovery"]) for r in rows]

    async def coverage(self, gateway: str, since: datetime, until: datetime) -> list[CoverageRecord]:
        rows = await self._db.execute_fetchall(
            "SELECT * FROM watch_coverage WHERE gateway = ? AND started_at < ? AND seen_at > ? ORDER BY started_at",
            (gateway, _ts(until), _ts(since)))
        return [CoverageRecord(r["id"], r["gateway"], _dt(r["started_at"]), _dt(r["seen_at"])) for r in rows]
