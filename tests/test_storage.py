"""The repository on real SQLite files: round trip, crash recovery, migrations, validation."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage import CheckStatus, Metric, Repository, SchemaTooNew, StorageError, StorageFull
from storage.migrations import MIGRATIONS
from storage.repository import COLUMNS_SINCE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def repo(tmp_path):
    r = await Repository.open(tmp_path / "db" / "gwbot.sqlite3")
    yield r
    await r.close()


async def test_round_trip(repo):
    at = datetime(2026, 2, 3, 11, 41, tzinfo=UTC)
    run = await repo.create_run("checklist", "paper", "marcus", "chat -100", {"ibkr": {"port": 4002}})
    c1 = await repo.start_check(run, "connect")
    c2 = await repo.start_check(run, "soak")
    await repo.finish_check(c1, "passed", metrics=[Metric("connect", 12.5, "ms")], findings=["server version 178"])
    await repo.finish_check(c2, "failed", metrics=[Metric("drops", 1, "")], findings=["dropped"], error="1 drop",
                            series=[(0.0, 0.001), (5.0, None)])
    await repo.add_event(run, at, "disconnected", "Disconnected (peer closed)", {"reason": "peer closed"})
    await repo.add_logs(run, [(at, "WARNING", "bot.ibkr.client", "lost"), (at, "INFO", "bot", "back")])
    await repo.finish_run(run, "failed")

    stored = await repo.get_run(run)
    assert (stored.kind, stored.gateway, stored.status, stored.started_by, stored.origin) == (
        "checklist", "paper", "failed", "marcus", "chat -100")
    assert stored.config == {"ibkr": {"port": 4002}}
    assert [c.name for c in stored.checks] == ["connect", "soak"] and [c.seq for c in stored.checks] == [1, 2]
    assert stored.checks[0].metrics == (Metric("connect", 12.5, "ms"),)
    assert stored.checks[1].series == ((0.0, 0.001), (5.0, None))
    assert stored.checks[1].error == "1 drop"
    assert stored.events[0].at == at and stored.events[0].data == {"reason": "peer closed"}
    assert [entry.message for entry in stored.logs] == ["lost", "back"]
    assert stored.started_at.tzinfo is not None and stored.ended_at >= stored.started_at


async def test_list_and_latest(repo):
    ids = [await repo.create_run(k, gw, "x", "terminal", {}) for k, gw in
           [("connect", "paper"), ("soak", "backup"), ("checklist", "paper")]]
    c = await repo.start_check(ids[2], "port")
    await repo.finish_check(c, "passed")
    assert [r.id for r in await repo.list_runs()] == ids[::-1]
    assert [r.id for r in await repo.list_runs(gateway="paper")] == [ids[2], ids[0]]
    latest = await repo.latest_run("paper")
    assert (latest.id, latest.checks_total, latest.checks_passed) == (ids[2], 1, 1)
    assert await repo.latest_run("nope") is None


async def test_unfinished_run_is_interrupted_when_its_owner_closes(tmp_path):
    path = tmp_path / "gwbot.sqlite3"
    repo = await Repository.open(path)
    run = await repo.create_run("soak", "paper", "x", "terminal", {})
    await repo.start_check(run, "soak")
    await repo.close()  # its owner is gone: nobody will finish it

    repo = await Repository.open(path)
    assert repo.recovered_runs == ()
    stored = await repo.get_run(run)
    assert stored.status == "interrupted" and stored.ended_at is not None
    assert stored.checks[0].status == "interrupted"
    await repo.close()
    again = await Repository.open(path)
    assert again.recovered_runs == ()
    await again.close()


async def test_recovery_after_a_real_crash(tmp_path):
    path = tmp_path / "gwbot.sqlite3"
    code = textwrap.dedent(f"""
        import asyncio, os
        from datetime import UTC, datetime, timedelta
        from storage import Repository
        async def main():
            repo = await Repository.open({str(path)!r})
            run = await repo.create_run("soak", "paper", "x", "terminal", {{}})
            await repo.add_logs(run, [(datetime.now(UTC), "INFO", "bot", "heartbeat 1 ms")])
            os._exit(1)
        asyncio.run(main())
    """)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, cwd=ROOT)
    assert await proc.wait() == 1
    repo = await Repository.open(path)
    assert len(repo.recovered_runs) == 1
    stored = await repo.get_run(repo.recovered_runs[0])
    assert stored.status == "interrupted"
    assert [entry.message for entry in stored.logs] == ["heartbeat 1 ms"]
    await repo.close()


async def test_schema_version_and_wal(tmp_path):
    path = tmp_path / "gwbot.sqlite3"
    await (await Repository.open(path)).close()
    await (await Repository.open(path)).close()  # up to date: nothing to do
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(SchemaTooNew, match="written by a newer gwbot"):
        await Repository.open(path)


async def test_invalid_status_and_unknown_run_write_nothing(repo):
    run = await repo.create_run("connect", "paper", "x", "terminal", {})
    with pytest.raises(ValueError, match="invalid run status 'great'"):
        await repo.finish_run(run, "great")
    assert (await repo.get_run(run)).status == "running"
    check = await repo.start_check(run, "connect")
    with pytest.raises(ValueError, match="invalid check status"):
        await repo.finish_check(check, "meh")
    with pytest.raises(LookupError, match="no run #999"):
        await repo.start_check(999, "connect")
    with pytest.raises(LookupError, match="no run #999"):
        await repo.finish_run(999, "passed")


async def test_concurrent_writes_all_land(repo):
    run = await repo.create_run("soak", "paper", "x", "terminal", {})
    now = datetime.now(UTC)
    await asyncio.gather(*(repo.add_event(run, now, "heartbeat", f"beat {i}") for i in range(200)))
    assert len((await repo.get_run(run)).events) == 200


async def test_audit_round_trip(repo):
    await repo.add_audit(-100, 42, "@mallory", "/connect", False, "not on the allow-list")
    await repo.add_audit(-100, 7, "@kai", "/status", True)
    audit = await repo.list_audit()
    assert [(a.username, a.allowed) for a in audit] == [("@kai", True), ("@mallory", False)]
    assert audit[1].detail == "not on the allow-list" and audit[1].at.tzinfo is not None



async def test_earlier_figures_are_this_gateways_checks_before_the_run_newest_first(repo):
    async def drill(gateway: str, outage: float | None, name: str = "drill") -> int:
        run = await repo.create_run("drill", gateway, "x", "terminal", {})
        check = await repo.start_check(run, name)
        metrics = [Metric("stage_accepted", 0.0, "s")] + ([Metric("outage", outage, "s")] if outage is not None else [])
        await repo.finish_check(check, "passed" if outage is not None else "failed", metrics=metrics)
        await repo.finish_run(run, "passed")
        return run

    await drill("paper", 71.0)
    await drill("live", 5.0)  # another Gateway's
    await drill("paper", 93.0)
    await drill("paper", None)  # never came back: no outage measured
    await drill("paper", 60.0, name="reconnect")  # another check's
    await drill("paper", 74.0)
    now = await drill("paper", 80.0)
    assert await repo.history.earlier("paper", "drill", "outage", now, 8) == [74.0, 93.0, 71.0]
    assert await repo.history.earlier("paper", "drill", "outage", now, 2) == [74.0, 93.0]
    assert await repo.history.earlier("paper", "drill", "outage", 1, 8) == []


# ----------------------------------------------------------- owners
def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "bot", *args]


def soak_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("data_dir: data\nsoak: {heartbeat_interval: 1, progress_interval: 1}\n", encoding="utf-8")
    return cfg


async def test_a_soak_running_in_another_process_is_not_interrupted_until_it_dies(tmp_path):
    """`gwbot history` during a real `gwbot check soak` leaves it running; once the soak's process
    is killed the run is interrupted, ended at its last stored sample, with those samples kept."""
    cfg = str(soak_config(tmp_path))
    soak = await asyncio.create_subprocess_exec(
        *cli("--config", cfg, "check", "soak", "--simulate", "--duration", "60"), cwd=ROOT,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        seen = b""
        while seen.count(b"Still connected after") < 3:
            line = await asyncio.wait_for(soak.stdout.readline(), 30)
            assert line, seen.decode()
            seen += line
        history = await asyncio.to_thread(subprocess.run, cli("--config", cfg, "history"), cwd=ROOT,
                                          capture_output=True, text=True, timeout=30)
        assert history.returncode == 0, history.stderr
        assert "running" in history.stdout and "interrupted" not in history.stdout
        async with await Repository.open(tmp_path / "data" / "gwbot.sqlite3") as repo:
            assert repo.recovered_runs == ()
            assert (await repo.get_run(1)).status == "running"
        await asyncio.sleep(1.5)  # the soak goes on storing samples after being looked at
    finally:
        soak.kill()
        await soak.wait()
    killed_at = datetime.now(UTC)
    async with await Repository.open(tmp_path / "data" / "gwbot.sqlite3") as repo:
        assert repo.recovered_runs == (1,)
        run = await repo.get_run(1)
    assert run.status == "interrupted" and run.checks[0].status == "interrupted"
    soak_check = run.checks[0]
    assert len(soak_check.series) >= 4, "heartbeats taken before the crash are kept"
    assert all(rtt is not None and rtt < 1 for _, rtt in soak_check.series)
    last_sample = soak_check.started_at + timedelta(seconds=soak_check.series[-1][0])
    last_evidence = max([last_sample, *(e.at for e in run.events), *(e.at for e in run.logs)])
    assert run.ended_at < killed_at, "an interrupted run ends at its last stored sign of life, not when seen"
    assert abs((run.ended_at - last_evidence).total_seconds()) < 0.01
    assert soak_check.ended_at == run.ended_at


async def test_only_runs_whose_owner_is_gone_are_interrupted(tmp_path):
    path = tmp_path / "gwbot.sqlite3"
    me = os.getpid()
    ghost = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", "import os; print(os.getpid())"],
                                    capture_output=True, text=True, check=True)
    dead_pid = int(ghost.stdout)
    now = datetime.now(UTC)
    async with await Repository.open(path) as probe:
        host, _, start = probe.owner
    owners = {
        "finished": (host, me, start, now),
        "this process": (host, me, start, now),
        "dead process": (host, dead_pid, None, now),
        "reused pid": (host, me, "1", now),
        "other host, fresh lease": ("elsewhere", 1, "1", now),
        "other host, expired lease": ("elsewhere", 1, "1", now - timedelta(minutes=10)),
        "before owners were kept": (None, None, None, None),
    }
    ids: dict[str, int] = {}
    repo = await Repository.open(path)
    try:
        for name in owners:
            ids[name] = await repo.create_run("soak", "paper", name, "terminal", {})
        await repo.finish_run(ids.pop("finished"), "passed")
        with sqlite3.connect(path) as db:
            for name, run_id in ids.items():
                h, pid, st, alive = owners[name]
                db.execute("UPDATE runs SET owner_host = ?, owner_pid = ?, owner_start = ?, alive_at = ? WHERE id = ?",
                           (h, pid, st, alive and alive.isoformat(), run_id))
        async with await Repository.open(path) as other:  # as `gwbot history` would
            marked = set(other.recovered_runs)
        assert {name for name, run_id in ids.items() if run_id in marked} == {
            "dead process", "reused pid", "other host, expired lease", "before owners were kept"}
    finally:
        await repo.close()


# ------------------------------------------------- unusable database files
def data_config(tmp_path: Path) -> str:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("data_dir: data\n", encoding="utf-8")
    (tmp_path / "data").mkdir(exist_ok=True)
    return str(cfg)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {p.name: (p.read_bytes() if p.is_file() else None) for p in sorted(folder.iterdir())}


async def stored_run(path: Path) -> None:
    async with await Repository.open(path) as repo:
        run = await repo.create_run("connect", "paper", "x", "terminal", {})
        await repo.add_logs(run, [(datetime.now(UTC), "INFO", "bot", "a stored line")])
        await repo.finish_run(run, "passed")


def malformed(path: Path) -> None:
    asyncio.run(stored_run(path))
    with contextlib.closing(sqlite3.connect(path)) as db:
        (page,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'").fetchone()
        (size,) = db.execute("PRAGMA page_size").fetchone()
    with path.open("r+b") as f:  # the runs table's root page, scribbled over
        f.seek((page - 1) * size)
        f.write(b"\xff" * size)


def newer(path: Path) -> None:
    asyncio.run(stored_run(path))
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")


BAD_FILES = {
    "a folder": (lambda p: p.mkdir(), "is a folder, not a database file"),
    "not a database": (lambda p: p.write_bytes(b"<html>not sqlite</html>\n" * 300), "is not a gwbot database"),
    "malformed": (malformed, "is damaged"),
    "from a newer gwbot": (newer, "was written by a newer gwbot"),
}


@pytest.mark.parametrize("kind", BAD_FILES)
def test_an_unusable_database_is_one_line_and_left_alone(tmp_path, capsys, kind):
    from bot.frontends.cli import main

    cfg = data_config(tmp_path)
    db = tmp_path / "data" / "gwbot.sqlite3"
    make, says = BAD_FILES[kind]
    make(db)
    before = snapshot(tmp_path / "data")
    for args in (["history"], ["report", "1"], ["logs", "1"], ["check", "port", "--port", "1"]):
        if args[0] == "check":  # a real process: the terminal's progress printer binds sys.stdout at import
            done = subprocess.run(cli("--config", cfg, *args), cwd=ROOT, capture_output=True, text=True, timeout=60)
            code, out, err = done.returncode, done.stdout, done.stderr
        else:
            code = main(["--config", cfg, *args])
            out, err = capsys.readouterr()
        assert code == 2, (args, out, err)
        assert err.startswith(f"gwbot: {db} ") and err.count("\n") == 1, (args, err)
        assert says in err and ("move it away" in err or "upgrade gwbot" in err), err
        assert snapshot(tmp_path / "data") == before, f"{args} changed the data folder"


async def test_a_database_that_cannot_be_opened_leaves_no_sqlite_thread_behind(tmp_path):
    # A command ends right after the error; a thread still answering then meets a closed loop
    # and prints its traceback after gwbot's one line.
    link = tmp_path / "gwbot.sqlite3"
    link.symlink_to(tmp_path / "missing" / "gwbot.sqlite3")
    before = set(threading.enumerate())
    for _ in range(3):
        with pytest.raises(StorageError, match="unable to open database file"):
            await Repository.open(link)
        workers = [t.name for t in set(threading.enumerate()) - before if "connection_worker" in t.name]
        assert workers == [], "aiosqlite's thread outlives the failed open"


def as_ordinary_user() -> list[str]:
    """Root ignores file permissions; a person hitting a read-only folder is not root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot drop the power to ignore permissions")
    drop = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={drop}", f"--bounding-set={drop}"]


@contextlib.contextmanager
def chmod(*modes: tuple[Path, int]):
    old = [(p, p.stat().st_mode & 0o777) for p, _ in modes]
    try:
        for p, mode in modes:
            p.chmod(mode)
        yield
    finally:
        for p, mode in reversed(old):
            p.chmod(mode)


def gwbot_as_user(cfg: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*as_ordinary_user(), *cli("--config", cfg, *args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_history_report_and_logs_work_on_a_read_only_database(tmp_path):
    cfg = data_config(tmp_path)
    data, db = tmp_path / "data", tmp_path / "data" / "gwbot.sqlite3"
    asyncio.run(stored_run(db))
    before = snapshot(data)
    with chmod((data, 0o555), (db, 0o444)):
        for args, says in ((["history"], "#1"), (["report", "1"], "## Results"), (["logs", "1"], "a stored line")):
            done = gwbot_as_user(cfg, *args)
            assert (done.returncode, done.stderr) == (0, ""), (args, done.stderr)
            assert says in done.stdout
        done = gwbot_as_user(cfg, "check", "port", "--port", "1")
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith(f"gwbot: {db} is read-only") and "writable" in done.stderr
    assert snapshot(data) == before


@pytest.mark.parametrize(("mode", "says"), [(0o555, "cannot create"), (0o000, "no permission")])
def test_an_unwritable_or_unreadable_data_folder_is_one_line(tmp_path, mode, says):
    cfg = data_config(tmp_path)
    data = tmp_path / "data"
    with chmod((data, mode)):
        # Reading needs no database: in a folder it can look into, history says there is none yet.
        for args in (["check", "port", "--port", "1"], *([] if mode & 0o100 else [["history"]])):
            done = gwbot_as_user(cfg, *args)
            assert done.returncode == 2 and done.stderr.count("\n") == 1, (args, done.stderr)
            assert str(data) in done.stderr and says in done.stderr and "data_dir" in done.stderr
        if mode & 0o100:
            done = gwbot_as_user(cfg, "history")
            assert (done.returncode, done.stderr) == (0, "") and "No runs yet" in done.stdout, done.stderr
    assert snapshot(data) == {}


async def test_a_full_disk_is_one_line_and_writes_nothing(tmp_path):
    path = tmp_path / "gwbot.sqlite3"
    async with await Repository.open(path) as repo:
        run = await repo.create_run("soak", "paper", "x", "terminal", {})
        # SQLite's own ceiling on the file's size: its writes then fail as on a full disk (SQLITE_FULL).
        (pages,) = await (await repo._db.execute("PRAGMA page_count")).fetchone()
        await repo._db.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(StorageFull) as full:
            await repo.add_logs(run, [(datetime.now(UTC), "INFO", "bot", "x" * 5000)] * 20)
        assert str(full.value) == (f"cannot write {path}: the disk is full; free some space there and try again")
        assert (await repo.get_run(run)).logs == ()


# ------------------------------------------------- one typed contract
async def test_hints_warnings_and_facts_are_columns_and_older_rows_are_split_into_them(tmp_path):
    """A check stored before the hints column kept its hints, warnings and accounts as prose among
    its findings; the migration moves them to their columns, and new checks store them there."""
    path = tmp_path / "gwbot.sqlite3"
    with sqlite3.connect(path) as db:  # a database as the gwbot before this one left it
        for number, script in enumerate(MIGRATIONS[:COLUMNS_SINCE - 1], start=1):
            db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")
        db.execute("INSERT INTO runs (kind, gateway, status, started_by, origin, config, started_at) "
                   "VALUES ('connect', 'paper', 'failed', 'x', 'terminal', '{}', '2026-02-03T11:40:00+00:00')")
        old = ["Connected", "Managed accounts: DU1, DU2", "⚠️ Warning: executions unanswered", "Hint: Start it"]
        db.execute("INSERT INTO checks (run_id, seq, name, status, started_at, findings) "
                   "VALUES (1, 1, 'connect', 'failed', '2026-02-03T11:40:00+00:00', ?)", (json.dumps(old),))
    async with await Repository.open(path) as repo:
        (check,) = (await repo.get_run(1)).checks
        assert check.findings == ("Connected", "Managed accounts: DU1, DU2")
        assert (check.hints, check.warnings, check.facts) == (("Start it",), ("executions unanswered",),
                                                               {"accounts": "DU1, DU2"})
        assert check.status is CheckStatus.FAILED
        new = await repo.start_check(1, "connect")
        await repo.finish_check(new, CheckStatus.PASSED, findings=["Connected"], hints=["a", "b"],
                                warnings=["w"], facts={"accounts": "DU3"})
        stored = (await repo.get_run(1)).checks[1]
        assert (stored.findings, stored.hints, stored.warnings, stored.facts) == (
            ("Connected",), ("a", "b"), ("w",), {"accounts": "DU3"})


async def test_a_transaction_is_all_or_nothing_and_keeps_other_tasks_writes_out(repo):
    run = await repo.create_run("connect", "paper", "x", "terminal", {})
    check = await repo.start_check(run, "connect")
    at = datetime.now(UTC)
    other: asyncio.Task[None] | None = None
    with pytest.raises(LookupError):
        async with repo.transaction():
            await repo.finish_check(check, "passed", metrics=[Metric("connect", 1.0, "ms")])
            # Another task writing meanwhile waits for the transaction: it is not rolled back with it.
            other = asyncio.create_task(repo.add_event(run, at, "note", "from another task"))
            await asyncio.sleep(0.05)
            assert not other.done()
            await repo.finish_run(999, "passed")  # fails: nothing of this transaction may stay
    await other
    stored = await repo.get_run(run)
    assert stored.checks[0].status == "running" and stored.checks[0].metrics == ()
    assert [e.message for e in stored.events] == ["from another task"]


async def test_no_read_sees_another_tasks_open_transaction_nor_waits_for_it(tmp_path):
    """A writer inserts and then waits inside its transaction; meanwhile every reader (the runs,
    the outbox's and the watch's stores) sees only what is committed, at once; the writer then
    fails, and the rows it rolled back were never seen by anyone."""
    written, finish = asyncio.Event(), asyncio.Event()
    nothing = ([], None, [], [], [])
    # Closing finds no run of its own to interrupt: the rolled-back one never existed.
    async with await Repository.open(tmp_path / "gwbot.sqlite3") as repo:
        async def writer() -> None:
            async with repo.transaction():
                await repo.create_run("connect", "paper", "x", "terminal", {})
                at = datetime.now(UTC).isoformat()
                await repo._db.execute("INSERT INTO watch_subscribers (chat_id, by, since) VALUES (-100, 'x', ?)",
                                       (at,))
                await repo._db.execute("INSERT INTO outbox (chat_id, kind, text, created_at) "
                                       "VALUES (-100, 'text', 'hi', ?)", (at,))
                written.set()
                await finish.wait()
                raise RuntimeError("the writer fails: its transaction is rolled back")

        async def seen() -> tuple:
            return (await repo.list_runs(), await repo.get_run(1), await repo.subscribers.chat_ids(),
                    await repo.outbox.pending(-100), await repo.outbox.sendable_chats())

        task = asyncio.create_task(writer())
        try:
            await written.wait()
            async with asyncio.timeout(2):  # reads never wait for the writer's transaction to end
                assert await seen() == nothing
        finally:
            finish.set()  # however the reads went, the writer lets go (else closing would wait for it)
            await asyncio.gather(task, return_exceptions=True)
        assert isinstance(task.exception(), RuntimeError)
        assert await seen() == nothing
        assert await repo.subscribers.add(-200, "y") and await repo.subscribers.chat_ids() == [-200], "committed"


async def test_closing_lets_a_handed_over_write_land_whose_caller_was_cancelled(tmp_path):
    """A check cut off by SIGTERM while it queued a message: the write is finished, not closed under."""
    from storage import OutMessage

    loop = asyncio.get_running_loop()
    unseen: list[dict] = []
    loop.set_exception_handler(lambda _, context: unseen.append(context))
    repo = await Repository.open(tmp_path / "gwbot.sqlite3")
    caller = asyncio.create_task(repo.outbox.enqueue_many([(-100, OutMessage.plain("queued as gwbot stopped"))]))
    while not repo._lock.locked():  # until the write is inside its transaction
        await asyncio.sleep(0)
    caller.cancel()
    await repo.close()
    await asyncio.sleep(0.05)
    gc.collect()  # "Task exception was never retrieved" is reported when the task is collected
    assert unseen == []
    async with await Repository.open(tmp_path / "gwbot.sqlite3") as again:
        assert [r.message.text for r in await again.outbox.pending(-100)] == ["queued as gwbot stopped"]
