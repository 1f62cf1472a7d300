"""The seed's report template, rendered from a run stored in a real database (golden files)."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot import report
from bot.config import Config
from storage import Metric, Repository

GOLDEN = Path(__file__).parent / "golden"
T0 = datetime(2026, 2, 3, 11, 40, tzinfo=UTC)


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("GWBOT_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"rendering changed; GWBOT_UPDATE_GOLDEN=1 rewrites {path}"


async def store_checklist(repo: Repository, *, reconnect_ok: bool) -> int:
    run = await repo.create_run("checklist", "paper", "marcus (terminal)", "terminal", Config().public_dict())
    checks = [
        ("port", "passed", [Metric("tcp_connect", 0.4, "ms")], {}),
        ("connect", "passed", [Metric("connect", 15, "ms"), Metric("server_version", 178, "")],
         {"findings": ["Managed accounts: DUO779750"], "facts": {"accounts": "DUO779750"}}),
        ("soak", "passed", [Metric("duration", 600, "s"), Metric("heartbeats", 120, ""),
                            Metric("missed_heartbeats", 0, ""), Metric("drops", 0, ""),
                            Metric("rtt_min", 0.8, "ms"), Metric("rtt_median", 1.1, "ms"),
                            Metric("rtt_p95", 2.0, "ms"), Metric("rtt_max", 3.2, "ms")], {}),
        ("disconnect", "passed", [Metric("disconnect", 1.2, "ms")], {}),
    ]
    if reconnect_ok:
        checks.append(("reconnect", "passed", [Metric("prompt_to_drop", 4.1, "s"),
                                               Metric("back_to_reconnected", 0.3, "s"),
                                               Metric("reconnect_attempts", 2, ""), Metric("downtime", 14.2, "s")],
                       {}))
    else:
        checks.append(("reconnect", "failed", [Metric("prompt_to_drop", 4.1, "s"), Metric("reconnect_attempts", 5, "")],
                       {"hints": ["Check `max_reconnect_attempts` in config",
                                  "Verify `reconnect_delay` is appropriate"],
                        "error": "Auto-reconnect gave up after 5 attempts (52.0 s): "
                                 "Connection refused on 127.0.0.1:4002"}))
    checks.append(("errors", "passed", [Metric("rows_ok", 7, ""), Metric("rows", 7, "")],
                   {"findings": ["ok: refused port: GatewayRefused in 0.00 s (expected GatewayRefused within 1 s)"]}))
    for name, status, metrics, stored in checks:
        check = await repo.start_check(run, name)
        await repo.finish_check(check, status, metrics=metrics, **stored)
    await repo.add_logs(run, [(T0 + timedelta(minutes=12), "WARNING", "bot.ibkr.client",
                               "connection to 127.0.0.1:4002 lost: peer closed (Peer closed connection.)")])
    await repo.finish_run(run, "passed" if reconnect_ok else "failed")
    return run


@pytest.mark.parametrize(("reconnect_ok", "name"), [(True, "report_passed.md"), (False, "report_failed.md")])
async def test_report_from_a_stored_run(tmp_path, reconnect_ok, name):
    async with await Repository.open(tmp_path / "gwbot.sqlite3") as repo:
        run_id = await store_checklist(repo, reconnect_ok=reconnect_ok)
        stored = await repo.get_run(run_id)
    stored = replace(stored, started_at=T0, ended_at=T0 + timedelta(minutes=13))
    text = report.markdown(stored)
    golden(name, text)
    golden(name.replace(".md", "_summary.txt"), report.summary(stored) + "\n")


async def test_interrupted_partial_run_still_reports(tmp_path):
    path = tmp_path / "gwbot.sqlite3"
    async with await Repository.open(path) as repo:
        run = await repo.create_run("checklist", "paper", "x", "terminal", Config().public_dict())
        await repo.start_check(run, "soak")
    async with await Repository.open(path) as repo:
        stored = await repo.get_run(run)
    text = report.markdown(stored)
    assert "**Status:** ❌ INTERRUPTED" in text
    assert "- soak: interrupted" in text
    assert "gwbot stopped before it finished" in text


NONE_NEEDED = "None: the connection lifecycle behaved as expected"


async def store_unfinished(repo: Repository, status: str) -> int:
    """A connect run that did not pass, as each front end stores it (no hint from the check)."""
    run = await repo.create_run("connect", "paper", "x", "terminal", Config().public_dict())
    check = await repo.start_check(run, "connect")
    if status == "interrupted":
        return run  # its owner goes away when the repository closes
    await repo.finish_check(check, status, error="cancelled before it finished" if status == "cancelled"
                            else "Connected, but the API never became ready")
    await repo.finish_run(run, status)
    return run


@pytest.mark.parametrize(("status", "says"), [
    ("failed", "run it again: `gwbot check connect`"),
    ("error", "run it again: `gwbot check connect`"),
    ("cancelled", "was cancelled before it finished"),
    ("interrupted", "was interrupted"),
])
async def test_a_run_that_did_not_pass_never_recommends_nothing(tmp_path, status, says):
    path = tmp_path / "gwbot.sqlite3"
    async with await Repository.open(path) as repo:
        run = await store_unfinished(repo, status)
    async with await Repository.open(path) as repo:
        stored = await repo.get_run(run)
    assert stored.status == status
    recommendations = report.markdown(stored).split("**Recommendations:**")[1]
    assert NONE_NEEDED not in recommendations
    assert says in recommendations


async def test_an_interrupted_soak_reports_its_stored_samples_and_when_it_stopped(tmp_path):
    path = tmp_path / "gwbot.sqlite3"
    async with await Repository.open(path) as repo:
        run = await repo.create_run("soak", "paper", "x", "terminal", Config().public_dict())
        await repo.start_check(run, "soak")
        (soak,) = (await repo.get_run(run)).checks
        beats = [(soak.started_at + timedelta(seconds=5 * i + 1), rtt / 1000)
                 for i, rtt in enumerate([1.0, 2.0, 1.5, 3.0])] + [(soak.started_at + timedelta(seconds=21), None)]
        await repo.add_samples(run, beats)
    async with await Repository.open(path) as repo:  # the soak's process is gone: interrupted
        stored = await repo.get_run(run)
    text = report.markdown(stored)
    assert "_Run #1 (soak)" in text and "took 21 s_" in text
    assert ("- ❌ Stayed connected for 10+ minutes: interrupted after 21 s; 5 heartbeats stored "
            "(RTT median 1.8 ms, max 3.0 ms), 1 missed") in text


async def test_the_reconnect_after_a_soak_drop_is_in_the_report(tmp_path):
    from bot.ibkr.events import Disconnected, DisconnectReason, Reconnected, Reconnecting
    from bot.journal import describe

    async with await Repository.open(tmp_path / "gwbot.sqlite3") as repo:
        run = await repo.create_run("soak", "paper", "x", "terminal", Config().public_dict())
        check = await repo.start_check(run, "soak")
        (soak,) = (await repo.get_run(run)).checks
        t = soak.started_at
        for event in (Disconnected(at=t + timedelta(seconds=25), reason=DisconnectReason.PEER_CLOSED),
                      Reconnecting(at=t + timedelta(seconds=25.1), attempt=1, max_attempts=5, delay=0.5),
                      Reconnected(at=t + timedelta(seconds=28.2), downtime=3.1, attempts=1),
                      Disconnected(at=t + timedelta(seconds=40), reason=DisconnectReason.LOCAL)):
            await repo.add_event(run, event.at, event.kind, describe(event), {})
        await repo.finish_check(check, "failed", metrics=[Metric("duration", 40, "s"), Metric("drops", 1, "")],
                                error=f"Connection dropped at {t + timedelta(seconds=25):%H:%M:%S} UTC (peer closed)")
        await repo.finish_run(run, "failed")
        stored = await repo.get_run(run)
    # The events were stored with the times a 40 s soak would give them; the check ends then too.
    stored = replace(stored, checks=(replace(stored.checks[0], ended_at=t + timedelta(seconds=40)),))
    text = report.markdown(stored)
    connection = text.split("**Connection Test:**")[1].split("**Auto-Reconnect Test:**")[0]
    assert f"  - {t + timedelta(seconds=25):%H:%M:%S} UTC: Disconnected (peer closed)\n" in connection
    assert f"  - {t + timedelta(seconds=28.2):%H:%M:%S} UTC: Reconnected after 3.1 s down, 1 attempt(s)\n" in connection
    assert "local disconnect" not in connection and "Reconnecting" not in connection


async def test_a_new_check_is_reported_from_its_own_file_alone(tmp_path, monkeypatch):
    """What the report shows of a check comes from the check's class: a check added to the
    registry gets its summary line and its lines in its section without report.py knowing it."""
    from bot import checks
    from bot.checks.base import Check, mark, passed

    class LatencyCheck(Check):
        name = "latency"
        section = "Connection Test"

        async def execute(self, ctx, rec):
            rec.metric("p50", 1.5, "ms")

        @classmethod
        def figures(cls, check):
            return f"p50 {check.metric('p50'):.1f} ms"

        @classmethod
        def report_lines(cls, run, check):
            return [f"- {mark(passed(check))} Latency measured"]

    monkeypatch.setattr(checks, "CHECKS", (*checks.CHECKS, LatencyCheck))
    monkeypatch.setattr(report, "CHECKS", checks.CHECKS)
    async with await Repository.open(tmp_path / "gwbot.sqlite3") as repo:
        run = await repo.create_run("latency", "paper", "x", "terminal", Config().public_dict())
        check = await repo.start_check(run, "latency")
        await repo.finish_check(check, "passed", metrics=[Metric("p50", 1.5, "ms")])
        await repo.finish_run(run, "passed")
        stored = await repo.get_run(run)
    assert report.summary(stored).splitlines()[1] == "✅ latency: passed, p50 1.5 ms"
    connection = report.markdown(stored).split("**Connection Test:**")[1].split("**Auto-Reconnect Test:**")[0]
    assert connection.splitlines()[-2] == "- ✅ Latency measured"
