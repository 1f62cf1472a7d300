"""The repository on real SQLite files: round trip, crash recovery, migrations, validation."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from storage import Metric, Repository, SchemaTooNew
from storage.migrations import MIGRATIONS

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


async def test_unfinished_run_is_interrupted_on_reopen(tmp_path):
    path = tmp_path / "gwbot.sqlite3"
    repo = await Repository.open(path)
    run = await repo.create_run("soak", "paper", "x", "terminal", {})
    await repo.start_check(run, "soak")
    await repo.close()  # as if the process went away mid-soak

    repo = await Repository.open(path)
    assert repo.recovered_runs == (run,)
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
        from datetime import UTC, datetime
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
    with pytest.raises(SchemaTooNew, match="newer than this gwbot knows"):
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
