"""The watch's stored outages and watched spans (what /uptime is computed from), and its subscribers.

An incident is written when it opens and again whenever it changes, keyed by the watch's
incident key, so the row is current within a moment and survives a crash. A coverage span says
"gwbot was watching this Gateway from ... to at least ...": time outside every span is not
counted at all, and an incident left open by a stopped gwbot is closed at its last sign of life.
Times are stored as fixed-width ISO UTC text, so text order is time order.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields
from datetime import datetime
from typing import Any

from storage.models import Store, now, ts, when

# An incident open when gwbot stopped: we know it lasted at least until we stopped looking.
ENDED_UNWATCHED = "gwbot stopped watching"


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
    ref: str | None = None  # the short reference alert buttons carry


@dataclass(frozen=True)
class CoverageRecord:
    id: int
    gateway: str
    started_at: datetime
    seen_at: datetime


_COLUMNS = tuple(f.name for f in fields(IncidentRecord))  # the table's columns, named as the record's fields
_UPSERT = (f"INSERT INTO watch_incidents ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
           f"ON CONFLICT (key) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in _COLUMNS[1:])}")


class IncidentStore(Store):
    """A watch being stopped still stores its last update (a write lands even when cancelled)."""

    async def watch_started(self, gateway: str, at: datetime, keep: str | None = None) -> int:
        """A new watched span; incidents a previous gwbot left open end at its last sign of life,
        except ``keep`` (the key of the outage the watch takes up again)."""
        return await self._committed(lambda: self._watch_started(gateway, at, keep))

    async def _watch_started(self, gateway: str, at: datetime, keep: str | None) -> int:
        row = await (await self._db.execute(
            "SELECT MAX(seen_at) FROM watch_coverage WHERE gateway = ?", (gateway,))).fetchone()
        last_seen = row[0] if row else None
        await self._db.execute(
            "UPDATE watch_incidents SET ended_at = MAX(started_at, COALESCE(?, started_at)), recovery = ? "
            "WHERE gateway = ? AND ended_at IS NULL AND key IS NOT ?", (last_seen, ENDED_UNWATCHED, gateway, keep))
        cur = await self._db.execute(
            "INSERT INTO watch_coverage (gateway, started_at, seen_at) VALUES (?, ?, ?)", (gateway, ts(at), ts(at)))
        return cur.lastrowid or 0

    async def watch_seen(self, coverage_id: int, at: datetime) -> None:
        await self._execute("UPDATE watch_coverage SET seen_at = MAX(seen_at, ?) WHERE id = ?", (ts(at), coverage_id))

    async def save(self, r: IncidentRecord) -> None:
        values = [ts(v) if isinstance(v, datetime) else v for v in astuple(r)]
        await self._execute(_UPSERT, values)

    async def remember(self, gateway: str, state: str, at: datetime) -> None:
        """The watch's memory for ``gateway`` (JSON made by bot/watch/memory.py), replacing the last."""
        await self._execute("INSERT INTO watch_memory (gateway, saved_at, state) VALUES (?, ?, ?) "
                            "ON CONFLICT (gateway) DO UPDATE SET saved_at = excluded.saved_at, state = excluded.state",
                            (gateway, ts(at), state))

    async def recall(self, gateway: str) -> str | None:
        rows = list(await self._db.execute_fetchall("SELECT state FROM watch_memory WHERE gateway = ?", (gateway,)))
        return str(rows[0]["state"]) if rows else None

    async def by_ref(self, ref: str) -> IncidentRecord | None:
        """The incident a button names."""
        rows = await self._db.execute_fetchall("SELECT * FROM watch_incidents WHERE ref = ? LIMIT 1", (ref,))
        records = self._records(rows)
        return records[0] if records else None

    @staticmethod
    def _records(rows: Any) -> list[IncidentRecord]:
        values: list[dict[str, Any]] = [{c: when(r[c]) if c.endswith("_at") else r[c] for c in _COLUMNS} for r in rows]
        return [IncidentRecord(**v | {"alerted": bool(v["alerted"])}) for v in values]

    async def incidents(self, gateway: str, since: datetime, until: datetime) -> list[IncidentRecord]:
        """Incidents overlapping [since, until), oldest first (open ones included)."""
        rows = await self._db.execute_fetchall(
            "SELECT * FROM watch_incidents WHERE gateway = ? AND started_at < ? AND (ended_at IS NULL OR ended_at > ?) "
            "ORDER BY started_at", (gateway, ts(until), ts(since)))
        return self._records(rows)

    async def coverage(self, gateway: str, since: datetime, until: datetime) -> list[CoverageRecord]:
        rows = await self._db.execute_fetchall(
            "SELECT * FROM watch_coverage WHERE gateway = ? AND started_at < ? AND seen_at > ? ORDER BY started_at",
            (gateway, ts(until), ts(since)))
        return [CoverageRecord(r["id"], r["gateway"], datetime.fromisoformat(r["started_at"]),
                               datetime.fromisoformat(r["seen_at"])) for r in rows]


class SubscriberStore(Store):
    """Chats that asked for the watch's alerts with /subscribe (besides ``watch.alert_chat_ids``)."""

    async def add(self, chat_id: int, by: str) -> bool:
        """False: the chat was subscribed already."""
        cur = await self._execute("INSERT OR IGNORE INTO watch_subscribers (chat_id, by, since) VALUES (?, ?, ?)",
                                  (chat_id, by, now()))
        return bool(cur.rowcount == 1)

    async def remove(self, chat_id: int) -> bool:
        """False: the chat was not subscribed."""
        cur = await self._execute("DELETE FROM watch_subscribers WHERE chat_id = ?", (chat_id,))
        return bool(cur.rowcount == 1)

    async def chat_ids(self) -> list[int]:
        rows = await self._db.execute_fetchall("SELECT chat_id FROM watch_subscribers ORDER BY chat_id")
        return [r["chat_id"] for r in rows]
