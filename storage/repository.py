"""The one aiosqlite repository: runs, checks, events, log lines and the audit trail.

Every write commits at once, so a crash leaves a readable partial run; on open, runs still
marked running are marked interrupted. WAL lets readers (a /report) run beside the writer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from storage.migrations import MIGRATIONS
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
from storage.outbox import OutboxStore

log = logging.getLogger(__name__)


def _ts(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at!r}: store aware UTC times")
    return at.astimezone(UTC).isoformat()


def _dt(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _now() -> str:
    return _ts(datetime.now(UTC))


def _status(value: str, allowed: frozenset[str], what: str) -> str:
    value = str(value)
    if value not in allowed:
        raise ValueError(f"invalid {what} status {value!r}; expected one of {', '.join(sorted(allowed))}")
    return value


class SchemaTooNew(RuntimeError):
    pass


class Repository:
    """Open with ``await Repository.open(path)``; close with ``await repo.close()`` or ``async with``."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self.recovered_runs: tuple[int, ...] = ()
        self.outbox = OutboxStore(db)  # the outbox's rows share this connection (one writer)

    @classmethod
    async def open(cls, path: Path) -> Repository:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path)
        db.row_factory = aiosqlite.Row
        repo = cls(db, path)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute("PRAGMA busy_timeout=5000")
            await repo._migrate()
            await repo._recover()
        except BaseException:
            await db.close()
            raise
        return repo

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> Repository:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _migrate(self) -> None:
        (version,) = await self._one("PRAGMA user_version")
        if version > len(MIGRATIONS):
            raise SchemaTooNew(f"{self.path}: database schema version {version} is newer than this gwbot "
                               f"knows ({len(MIGRATIONS)}); upgrade gwbot")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            log.info("migrating %s to schema version %d", self.path, number)
            await self._db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")

    async def _recover(self) -> None:
        rows = await self._db.execute_fetchall("SELECT id FROM runs WHERE status = 'running' ORDER BY id")
        self.recovered_runs = tuple(r["id"] for r in rows)
        if not self.recovered_runs:
            return
        now = _now()
        await self._db.execute("UPDATE checks SET status = 'interrupted', ended_at = ? WHERE status = 'running'", (now,))
        await self._db.execute("UPDATE runs SET status = 'interrupted', ended_at = ? WHERE status = 'running'", (now,))
        await self._db.commit()
        log.warning("marked runs %s interrupted: they were running when gwbot stopped",
                    ", ".join(map(str, self.recovered_runs)))

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        async with self._db.execute(sql, params) as cur:
            return await cur.fetchone()

    async def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = await self._db.execute(sql, params)
        await self._db.commit()
        return cur.lastrowid or 0

    async def _require_run(self, run_id: int) -> None:
        if await self._one("SELECT 1 FROM runs WHERE id = ?", (run_id,)) is None:
            raise LookupError(f"no run #{run_id}")

    # -------------------------------------------------------------- writes
    async def create_run(self, kind: str, gateway: str, started_by: str, origin: str,
                         config: Mapping[str, Any]) -> int:
        return await self._write(
            "INSERT INTO runs (kind, gateway, status, started_by, origin, config, started_at) "
            "VALUES (?, ?, 'running', ?, ?, ?, ?)",
            (kind, gateway, started_by, origin, json.dumps(dict(config), default=str), _now()))

    async def finish_run(self, run_id: int, status: str) -> None:
        status = _status(status, RUN_STATUSES, "run")
        await self._require_run(run_id)
        await self._write("UPDATE runs SET status = ?, ended_at = ? WHERE id = ?", (status, _now(), run_id))

    async def start_check(self, run_id: int, name: str) -> int:
        await self._require_run(run_id)
        (seq,) = await self._one("SELECT COALESCE(MAX(seq), 0) + 1 FROM checks WHERE run_id = ?", (run_id,))
        return await self._write(
            "INSERT INTO checks (run_id, seq, name, status, started_at) VALUES (?, ?, ?, 'running', ?)",
            (run_id, seq, name, _now()))

    async def finish_check(self, check_id: int, status: str, *, metrics: Iterable[Metric] = (),
                           findings: Iterable[str] = (), error: str | None = None,
                           series: Iterable[tuple[float, float | None]] = ()) -> None:
        status = _status(status, CHECK_STATUSES, "check")
        if await self._one("SELECT 1 FROM checks WHERE id = ?", (check_id,)) is None:
            raise LookupError(f"no check #{check_id}")
        await self._write(
            "UPDATE checks SET status = ?, ended_at = ?, metrics = ?, findings = ?, error = ?, series = ? "
            "WHERE id = ?",
            (status, _now(), json.dumps([[m.name, m.value, m.unit] for m in metrics]),
             json.dumps(list(findings)), error, json.dumps([list(p) for p in series]), check_id))

    async def add_event(self, run_id: int, at: datetime, kind: str, message: str,
                        data: Mapping[str, Any] | None = None) -> None:
        await self._write("INSERT INTO events (run_id, at, kind, message, data) VALUES (?, ?, ?, ?, ?)",
                          (run_id, _ts(at), kind, message, json.dumps(dict(data or {}), default=str)))

    async def add_logs(self, run_id: int, rows: Sequence[tuple[datetime, str, str, str]]) -> None:
        if not rows:
            return
        await self._db.executemany(
            "INSERT INTO logs (run_id, at, level, logger, message) VALUES (?, ?, ?, ?, ?)",
            [(run_id, _ts(at), level, logger, message) for at, level, logger, message in rows])
        await self._db.commit()

    async def add_audit(self, chat_id: int | None, user_id: int | None, username: str, action: str,
                        allowed: bool, detail: str = "") -> None:
        await self._write(
            "INSERT INTO audit (at, chat_id, user_id, username, action, allowed, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (_now(), chat_id, user_id, username, action, int(allowed), detail))

    # --------------------------------------------------------------- reads
    async def get_run(self, run_id: int) -> RunRecord | None:
        run = await self._one("SELECT * FROM runs WHERE id = ?", (run_id,))
        if run is None:
            return None
        checks = await self._db.execute_fetchall("SELECT * FROM checks WHERE run_id = ? ORDER BY seq", (run_id,))
        events = await self._db.execute_fetchall("SELECT * FROM events WHERE run_id = ? ORDER BY id", (run_id,))
        logs = await self._db.execute_fetchall("SELECT * FROM logs WHERE run_id = ? ORDER BY id", (run_id,))
        return RunRecord(
            id=run["id"], kind=run["kind"], gateway=run["gateway"], status=run["status"],
            started_by=run["started_by"], origin=run["origin"], config=json.loads(run["config"]),
            started_at=_dt(run["started_at"]), ended_at=_dt(run["ended_at"]),
            checks=tuple(self._check(c) for c in checks),
            events=tuple(EventRecord(e["id"], e["run_id"], _dt(e["at"]), e["kind"], e["message"], json.loads(e["data"]))
                         for e in events),
            logs=tuple(LogRecord(entry["id"], entry["run_id"], _dt(entry["at"]), entry["level"], entry["logger"],
                                 entry["message"]) for entry in logs),
        )

    @staticmethod
    def _check(c: aiosqlite.Row) -> CheckRecord:
        return CheckRecord(
            id=c["id"], run_id=c["run_id"], seq=c["seq"], name=c["name"], status=c["status"],
            started_at=_dt(c["started_at"]), ended_at=_dt(c["ended_at"]),
            metrics=tuple(Metric(n, v, u) for n, v, u in json.loads(c["metrics"])),
            findings=tuple(json.loads(c["findings"])), error=c["error"],
            series=tuple((t, rtt) for t, rtt in json.loads(c["series"])),
        )

    async def list_runs(self, limit: int = 20, gateway: str | None = None) -> list[RunSummary]:
        rows = await self._db.execute_fetchall(
            "SELECT r.*, COUNT(c.id) AS total, COALESCE(SUM(c.status = 'passed'), 0) AS passed "
            "FROM runs r LEFT JOIN checks c ON c.run_id = r.id "
            "WHERE (? IS NULL OR r.gateway = ?) GROUP BY r.id ORDER BY r.id DESC LIMIT ?",
            (gateway, gateway, limit))
        return [RunSummary(r["id"], r["kind"], r["gateway"], r["status"], r["started_by"], r["origin"],
                           _dt(r["started_at"]), _dt(r["ended_at"]), r["total"], r["passed"]) for r in rows]

    async def latest_run(self, gateway: str | None = None) -> RunSummary | None:
        runs = await self.list_runs(limit=1, gateway=gateway)
        return runs[0] if runs else None

    async def list_audit(self, limit: int = 50) -> list[AuditRecord]:
        rows = await self._db.execute_fetchall("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        return [AuditRecord(r["id"], _dt(r["at"]), r["chat_id"], r["user_id"], r["username"], r["action"],
                            bool(r["allowed"]), r["detail"]) for r in rows]
