"""The one aiosqlite repository: runs, checks, events, samples, log lines and the audit trail.

Every write commits at once, so a crash leaves a readable partial run; a write of several
statements is one transaction (``async with repo.transaction():``), all or nothing. A run
records its owner (host, pid, process start) and renews a lease while it runs; a run still
marked running whose owner is provably gone is marked interrupted, ended at its last stored
sign of life. WAL lets readers (a /report, `gwbot history` during a soak) run beside the writer,
and reads in this process go to a read-only connection of their own (``Database``): they see only
committed data, never another task's transaction half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import aiosqlite

from storage.errors import ELSEWHERE, SchemaTooNew, StorageError, read_only, translate
from storage.history import HistoryStore
from storage.incidents import IncidentStore, SubscriberStore
from storage.migrations import MIGRATIONS
from storage.models import (
    AuditRecord,
    CheckRecord,
    CheckStatus,
    Database,
    EventRecord,
    LogRecord,
    Metric,
    RunRecord,
    RunStatus,
    RunSummary,
    now,
    ts,
    when,
)
from storage.outbox import OutboxStore

log = logging.getLogger(__name__)
T = TypeVar("T")

LEASE_RENEW = 5.0  # seconds between renewals of this process's running runs
LEASE_EXPIRY = timedelta(seconds=60)  # a lease this stale means its owner (on another host) is gone
SAMPLES_SINCE = 2  # schema version that has the samples table and run owners
# The schema version that has the checks' hints, warnings and facts columns (found, not numbered:
# migrations from parallel branches are renumbered when they merge).
COLUMNS_SINCE = next(n for n, script in enumerate(MIGRATIONS, start=1) if "ADD COLUMN hints" in script)


_dt = datetime.fromisoformat


def _status(value: str, allowed: type[CheckStatus | RunStatus], what: str) -> str:
    if value not in allowed.__members__.values():
        raise ValueError(f"invalid {what} status {value!r}; expected one of {', '.join(allowed)}")
    return str(value)


def _process_start(pid: int) -> str | None:
    """When the process started (clock ticks since boot, Linux): tells a reused pid from its first owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22; the name before ")" may hold spaces


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False  # kill(0 or -n, 0) would ask about process groups, not a process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process, alive
    return True


def _host() -> str:
    """This host, and its pid namespace: two containers may share a hostname but not their pids."""
    with contextlib.suppress(OSError):
        return f"{socket.gethostname()} {os.readlink('/proc/self/ns/pid')}"
    return socket.gethostname()


class Owner(NamedTuple):
    host: str
    pid: int
    start: str | None

    @classmethod
    def current(cls) -> Owner:
        return cls(_host(), os.getpid(), _process_start(os.getpid()))


def _owner_gone(row: sqlite3.Row, here: Owner, now: datetime) -> bool:
    """Provably gone: a dead or reused pid on this host, else a lease not renewed for LEASE_EXPIRY."""
    if row["owner_host"] is None:
        return True  # stored before owners were recorded: nothing could ever finish it
    if row["owner_host"] == here.host:
        if not _pid_alive(row["owner_pid"]):
            return True
        start = _process_start(row["owner_pid"])
        if start is not None and row["owner_start"] is not None:
            return start != row["owner_start"]
    alive_at = when(row["alive_at"])
    return alive_at is None or now - alive_at > LEASE_EXPIRY


def _access(path: Path, *, for_reading: bool) -> str:
    """How the file can be opened ("rw", "ro" or "immutable"), or why not; checks before SQLite
    creates or changes anything."""
    folder = path.parent
    try:
        if path.is_dir():
            raise StorageError(f"{path} is a folder, not a database file: move it away, {ELSEWHERE}")
        if not folder.exists():
            folder.mkdir()  # only the last folder: a mistyped path is an error, not a new tree
    except PermissionError as e:
        raise StorageError(f"cannot open {path}: no permission to reach {e.filename or folder}; "
                           f"give your user access, {ELSEWHERE}") from None
    except OSError as e:
        raise StorageError(f"cannot create the folder {folder} for {path}: {e.strerror}; create it, "
                           f"{ELSEWHERE}") from None
    if not os.access(folder, os.X_OK):
        raise StorageError(f"cannot open {path}: no permission to read the folder {folder}; "
                           f"give your user access, {ELSEWHERE}")
    if not path.exists():
        if not os.access(folder, os.W_OK):
            raise StorageError(f"cannot create {path}: the folder {folder} is not writable; "
                               f"make it writable, {ELSEWHERE}")
        return "rw"
    if not os.access(path, os.R_OK):
        raise StorageError(f"cannot open {path}: no permission to read it; give your user access, "
                           f"{ELSEWHERE}")
    if os.access(path, os.W_OK) and os.access(folder, os.W_OK):
        return "rw"
    if not for_reading:
        raise read_only(path)
    # Without a -wal file no writer is active, so nothing is missed by reading the file as it is;
    # "immutable" then reads without creating the -shm file a read-only folder would refuse.
    return "ro" if Path(f"{path}-wal").exists() else "immutable"


async def _connect(target: Path | str) -> aiosqlite.Connection:
    """A connection to a file, or to a ``file:`` URI (read-only opens)."""
    connecting = aiosqlite.connect(target, uri=isinstance(target, str))
    try:
        db = await connecting
    except BaseException:
        # aiosqlite tells its thread to stop without waiting for it; a command that ends at once
        # would close its loop first, and the thread's last answer prints a traceback.
        await asyncio.to_thread(connecting._thread.join)
        raise
    db.row_factory = aiosqlite.Row
    try:
        await db.execute("PRAGMA busy_timeout=5000")
    except BaseException:
        await db.close()
        raise
    return db


@contextlib.contextmanager
def _translated(path: Path) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as e:
        raise translate(path, e) from e


class Repository:
    """Open with ``await Repository.open(path)``; close with ``await repo.close()`` or ``async with``."""

    def __init__(self, db: aiosqlite.Connection, path: Path, *, read_only: bool = False) -> None:
        self._db = db  # the writer
        self.db = Database(db, self._in_transaction)
        self.path = path
        self.read_only = read_only
        self.owner = Owner.current()
        self.recovered_runs: tuple[int, ...] = ()
        self.outbox = OutboxStore(self.db, self.committed)  # the outbox's rows share these connections
        self._version = len(MIGRATIONS)
        self._owned: set[int] = set()  # runs this repository created and has not finished
        self._lease_task: asyncio.Task[None] | None = None
        # One connection serves every task: a transaction keeps the others' writes out until it ends.
        self._lock = asyncio.Lock()
        self._handed: set[asyncio.Future[Any]] = set()  # committed() writes still under way
        self._tx_task: asyncio.Task[Any] | None = None
        self.incidents = IncidentStore(self.db, self.committed)  # the watch's outages share these connections
        self.subscribers = SubscriberStore(self.db, self.committed)  # chats that /subscribe to the watch's alerts
        self.history = HistoryStore(self.db, self.committed)  # earlier runs' figures, to compare a result with

    @classmethod
    async def open(cls, path: Path, *, for_reading: bool = False) -> Repository:
        """Open (creating and migrating) the database. ``for_reading``: when the file or its folder
        is not writable, open it read-only instead of refusing (history, reports, logs)."""
        path = Path(path)
        mode = _access(path, for_reading=for_reading)
        with _translated(path):
            if mode == "rw":
                db = await _connect(path)
            else:
                db = await _connect(path.resolve().as_uri() + ("?mode=ro" if mode == "ro" else "?mode=ro&immutable=1"))
        repo = cls(db, path, read_only=mode != "rw")
        try:
            with _translated(path):
                # Read before any write: a file that is not ours, or too new, is left as it was.
                repo._version = await repo._value("PRAGMA user_version")
                if repo._version > len(MIGRATIONS):
                    raise SchemaTooNew(
                        f"{path} was written by a newer gwbot (schema version {repo._version}; this one knows "
                        f"{len(MIGRATIONS)}); upgrade gwbot, {ELSEWHERE}")
                if not repo.read_only:
                    await db.execute("PRAGMA journal_mode=WAL")
                    await db.execute("PRAGMA foreign_keys=ON")
                    await repo._migrate()
                    repo.recovered_runs = await repo._recover()
                    # From here on reads see only committed data (a read-only open has no writer beside it).
                    repo.db.reader = await _connect(path.resolve().as_uri() + "?mode=ro")
                    repo._lease_task = asyncio.create_task(repo._keep_leases(), name=f"leases {path.name}")
        except BaseException:
            await repo.db.close()
            raise
        return repo

    async def close(self) -> None:
        if self._lease_task is not None:
            self._lease_task.cancel()
            await asyncio.gather(self._lease_task, return_exceptions=True)
        try:
            if self._owned:  # we are their owner and we are going: nobody will finish them
                await self._interrupt(sorted(self._owned))
        except StorageError as e:
            log.warning("could not mark runs %s interrupted in %s: %s", sorted(self._owned), self.path, e)
        finally:
            # A handed-over write whose caller was cancelled (a stopping sender, a check cut off by
            # SIGTERM) lands first; closed under it, it would fail unseen ("no active connection").
            await asyncio.gather(*self._handed, return_exceptions=True)
            async with self._lock:
                await self.db.close()

    async def __aenter__(self) -> Repository:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _migrate(self) -> None:
        for number, script in enumerate(MIGRATIONS[self._version:], start=self._version + 1):
            log.info("migrating %s to schema version %d", self.path, number)
            await self._db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")
        self._version = len(MIGRATIONS)

    async def _recover(self) -> tuple[int, ...]:
        """Mark interrupted the running runs whose owner is gone; the ids marked."""
        rows = await self._all("SELECT id, owner_host, owner_pid, owner_start, alive_at FROM runs "
                               "WHERE status = 'running' ORDER BY id")
        now = datetime.now(UTC)
        gone = [r["id"] for r in rows if r["id"] not in self._owned and _owner_gone(r, self.owner, now)]
        if gone:
            await self._interrupt(gone)
            log.warning("marked runs %s interrupted: the gwbot running them is gone", ", ".join(map(str, gone)))
        return tuple(gone)

    async def _interrupt(self, run_ids: Iterable[int]) -> None:
        for run_id in run_ids:
            async with self.transaction():  # never a run left running with its checks interrupted
                ended = ts(await self._last_sign_of_life(run_id))
                await self._write("UPDATE checks SET status = 'interrupted', ended_at = ? "
                                  "WHERE run_id = ? AND status = 'running'", (ended, run_id))
                await self._write("UPDATE runs SET status = 'interrupted', ended_at = ? "
                                  "WHERE id = ? AND status = 'running'", (ended, run_id))
            self._owned.discard(run_id)

    async def _last_sign_of_life(self, run_id: int) -> datetime:
        """The last time stored for the run: when it was last seen doing anything."""
        row = await self._one(
            "SELECT (SELECT started_at FROM runs WHERE id = :r), (SELECT MAX(at) FROM events WHERE run_id = :r), "
            "(SELECT MAX(at) FROM logs WHERE run_id = :r), (SELECT MAX(at) FROM samples WHERE run_id = :r), "
            "(SELECT MAX(started_at) FROM checks WHERE run_id = :r), "
            "(SELECT MAX(ended_at) FROM checks WHERE run_id = :r)", {"r": run_id})
        assert row is not None  # a SELECT of subqueries always gives one row
        return max(_dt(t) for t in row if t)

    async def _keep_leases(self) -> None:
        """While open: renew our running runs' lease, and interrupt runs whose owner died meanwhile."""
        while True:
            await asyncio.sleep(LEASE_RENEW)
            try:
                if self._owned:
                    marks = ",".join("?" * len(self._owned))
                    await self._write(f"UPDATE runs SET alive_at = ? WHERE status = 'running' AND id IN ({marks})",
                                      (now(), *self._owned))
                self.recovered_runs += await self._recover()
            except Exception as e:  # a full disk now must not end the process's other work
                log.warning("could not renew run leases in %s: %s", self.path, e)

    async def _one(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> aiosqlite.Row | None:
        with _translated(self.path):
            async with self.db.execute(sql, params) as cur:
                return await cur.fetchone()

    async def _value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The one value of a query that always gives one row (a count, a pragma)."""
        row = await self._one(sql, params)
        assert row is not None, sql
        return row[0]

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> Iterable[aiosqlite.Row]:
        with _translated(self.path):
            return await self.db.execute_fetchall(sql, params)

    def _in_transaction(self) -> bool:
        """The calling task holds the open transaction (its statements belong on the writer)."""
        return self._tx_task is not None and self._tx_task is asyncio.current_task()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """The writes inside land together or not at all; nested in the same task, joins the outer one."""
        if self._in_transaction():
            yield
            return
        async with self._lock:
            self._tx_task = asyncio.current_task()
            owned = set(self._owned)
            try:
                # Inside the try: a task cancelled while BEGIN is queued still gets it rolled back
                # (aiosqlite runs a queued statement even when its caller has stopped waiting).
                with _translated(self.path):
                    await self._db.execute("BEGIN IMMEDIATE")  # reads inside see what the writes act on
                yield
                with _translated(self.path):
                    await self._db.commit()
            except BaseException:
                await self._db.rollback()  # a failed write leaves nothing half-done behind
                self._owned = owned  # a run created in it never existed; one finished in it still runs
                raise
            finally:
                self._tx_task = None

    async def committed(self, write: Callable[[], Awaitable[T]]) -> T:
        """``write`` in a transaction of its own, finished even if the caller is cancelled meanwhile:
        what the outbox and the watch hand over is handed over once. Never inside another transaction."""
        async def whole() -> T:
            async with self.transaction():
                return await write()
        task = asyncio.ensure_future(whole())
        self._handed.add(task)
        task.add_done_callback(self._handed.discard)
        return await asyncio.shield(task)

    async def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self.transaction():
            with _translated(self.path):
                cur = await self._db.execute(sql, params)
        return cur.lastrowid or 0

    async def _write_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        async with self.transaction():
            with _translated(self.path):
                await self._db.executemany(sql, rows)

    async def _require_run(self, run_id: int) -> None:
        if await self._one("SELECT 1 FROM runs WHERE id = ?", (run_id,)) is None:
            raise LookupError(f"no run #{run_id}")

    # -------------------------------------------------------------- writes
    async def create_run(self, kind: str, gateway: str, started_by: str, origin: str,
                         config: Mapping[str, Any]) -> int:
        """A new run, owned by this process until it is finished (or this repository closes)."""
        stamp = now()
        run_id = await self._write(
            "INSERT INTO runs (kind, gateway, status, started_by, origin, config, started_at, "
            "owner_host, owner_pid, owner_start, alive_at) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?)",
            (kind, gateway, started_by, origin, json.dumps(dict(config), default=str), stamp, *self.owner, stamp))
        self._owned.add(run_id)
        return run_id

    async def finish_run(self, run_id: int, status: RunStatus | str) -> None:
        checked = _status(status, RunStatus, "run")
        async with self.transaction():
            await self._require_run(run_id)
            await self._write("UPDATE runs SET status = ?, ended_at = ? WHERE id = ?", (checked, now(), run_id))
        self._owned.discard(run_id)

    async def start_check(self, run_id: int, name: str) -> int:
        async with self.transaction():  # the next seq is read and taken at once
            await self._require_run(run_id)
            seq = await self._value("SELECT COALESCE(MAX(seq), 0) + 1 FROM checks WHERE run_id = ?", (run_id,))
            return await self._write(
                "INSERT INTO checks (run_id, seq, name, status, started_at) VALUES (?, ?, ?, 'running', ?)",
                (run_id, seq, name, now()))

    async def finish_check(self, check_id: int, status: CheckStatus | str, *, metrics: Iterable[Metric] = (),
                           findings: Iterable[str] = (), error: str | None = None,
                           series: Iterable[tuple[float, float | None]] = (), hints: Iterable[str] = (),
                           warnings: Iterable[str] = (), facts: Mapping[str, str] | None = None) -> None:
        checked = _status(status, CheckStatus, "check")
        async with self.transaction():
            if await self._one("SELECT 1 FROM checks WHERE id = ?", (check_id,)) is None:
                raise LookupError(f"no check #{check_id}")
            await self._write(
                "UPDATE checks SET status = ?, ended_at = ?, metrics = ?, findings = ?, error = ?, series = ?, "
                "hints = ?, warnings = ?, facts = ? WHERE id = ?",
                (checked, now(), json.dumps([[m.name, m.value, m.unit] for m in metrics]),
                 json.dumps(list(findings)), error, json.dumps([list(p) for p in series]),
                 json.dumps(list(hints)), json.dumps(list(warnings)), json.dumps(dict(facts or {})), check_id))

    async def add_event(self, run_id: int, at: datetime, kind: str, message: str,
                        data: Mapping[str, Any] | None = None) -> None:
        await self._write("INSERT INTO events (run_id, at, kind, message, data) VALUES (?, ?, ?, ?, ?)",
                          (run_id, ts(at), kind, message, json.dumps(dict(data or {}), default=str)))

    async def add_logs(self, run_id: int, rows: Sequence[tuple[datetime, str, str, str]]) -> None:
        await self._write_many("INSERT INTO logs (run_id, at, level, logger, message) VALUES (?, ?, ?, ?, ?)",
                               [(run_id, ts(at), level, logger, message) for at, level, logger, message in rows])

    async def add_samples(self, run_id: int, rows: Sequence[tuple[datetime, float | None]]) -> None:
        """Heartbeat round trips (seconds; None: missed) as they are taken, so a crash keeps them."""
        await self._write_many("INSERT INTO samples (run_id, at, rtt) VALUES (?, ?, ?)",
                               [(run_id, ts(at), rtt) for at, rtt in rows])

    async def add_audit(self, chat_id: int | None, user_id: int | None, username: str, action: str,
                        allowed: bool, detail: str = "") -> None:
        await self._write(
            "INSERT INTO audit (at, chat_id, user_id, username, action, allowed, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (now(), chat_id, user_id, username, action, int(allowed), detail))

    # --------------------------------------------------------------- reads
    async def get_run(self, run_id: int) -> RunRecord | None:
        run = await self._one("SELECT * FROM runs WHERE id = ?", (run_id,))
        if run is None:
            return None
        checks = await self._all("SELECT * FROM checks WHERE run_id = ? ORDER BY seq", (run_id,))
        events = await self._all("SELECT * FROM events WHERE run_id = ? ORDER BY id", (run_id,))
        logs = await self._all("SELECT * FROM logs WHERE run_id = ? ORDER BY id", (run_id,))
        samples = [] if self._version < SAMPLES_SINCE else [
            (_dt(r["at"]), r["rtt"]) for r in await self._all("SELECT at, rtt FROM samples WHERE run_id = ? "
                                                              "ORDER BY id", (run_id,))]
        return RunRecord(
            id=run["id"], kind=run["kind"], gateway=run["gateway"], status=RunStatus(run["status"]),
            started_by=run["started_by"], origin=run["origin"], config=json.loads(run["config"]),
            started_at=_dt(run["started_at"]), ended_at=when(run["ended_at"]),
            checks=tuple(self._check(c, samples, self._version >= COLUMNS_SINCE) for c in checks),
            events=tuple(EventRecord(e["id"], e["run_id"], _dt(e["at"]), e["kind"], e["message"], json.loads(e["data"]))
                         for e in events),
            logs=tuple(LogRecord(entry["id"], entry["run_id"], _dt(entry["at"]), entry["level"], entry["logger"],
                                 entry["message"]) for entry in logs),
        )

    @staticmethod
    def _check(c: aiosqlite.Row, samples: Sequence[tuple[datetime, float | None]], columns: bool) -> CheckRecord:
        started, ended = _dt(c["started_at"]), when(c["ended_at"])
        series = tuple((t, rtt) for t, rtt in json.loads(c["series"]))
        if not series and c["status"] == "interrupted":
            # It never stored its result: its heartbeats, stored as they were taken, are the series.
            series = tuple((round((at - started).total_seconds(), 3), rtt) for at, rtt in samples
                           if started <= at and (ended is None or at <= ended))
        return CheckRecord(
            id=c["id"], run_id=c["run_id"], seq=c["seq"], name=c["name"], status=CheckStatus(c["status"]),
            started_at=started, ended_at=ended,
            metrics=tuple(Metric(n, v, u) for n, v, u in json.loads(c["metrics"])),
            findings=tuple(json.loads(c["findings"])), error=c["error"],
            series=series, **({} if not columns else {  # else a read-only file of an older schema
                "hints": tuple(json.loads(c["hints"])), "warnings": tuple(json.loads(c["warnings"])),
                "facts": json.loads(c["facts"])}),
        )

    async def list_runs(self, limit: int = 20, gateway: str | None = None) -> list[RunSummary]:
        rows = await self._all(
            "SELECT r.*, COUNT(c.id) AS total, COALESCE(SUM(c.status = 'passed'), 0) AS passed "
            "FROM runs r LEFT JOIN checks c ON c.run_id = r.id "
            "WHERE (? IS NULL OR r.gateway = ?) GROUP BY r.id ORDER BY r.id DESC LIMIT ?",
            (gateway, gateway, limit))
        return [RunSummary(r["id"], r["kind"], r["gateway"], RunStatus(r["status"]), r["started_by"], r["origin"],
                           _dt(r["started_at"]), when(r["ended_at"]), r["total"], r["passed"]) for r in rows]

    async def latest_run(self, gateway: str | None = None) -> RunSummary | None:
        runs = await self.list_runs(limit=1, gateway=gateway)
        return runs[0] if runs else None

    async def list_audit(self, limit: int = 50) -> list[AuditRecord]:
        rows = await self._all("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        return [AuditRecord(r["id"], _dt(r["at"]), r["chat_id"], r["user_id"], r["username"], r["action"],
                            bool(r["allowed"]), r["detail"]) for r in rows]
