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
        ("port", "passed", [Metric("tcp_connect", 0.4, "ms")], [], None),
        ("connect", "passed", [Metric("connect", 15, "ms"), Metric("server_version", 178, "")],
         ["Managed accounts: DUO779750"], None),
        ("soak", "passed", [Metric("duration", 600, "s"), Metric("heartbeats", 120, ""),
                            Metric("missed_heartbeats", 0, ""), Metric("drops", 0, ""),
                            Metric("rtt_min", 0.8, "ms"), Metric("rtt_median", 1.1, "ms"),
                            Metric("rtt_p95", 2.0, "ms"), Metric("rtt_max", 3.2, "ms")], [], None),
        ("disconnect", "passed", [Metric("disconnect", 1.2, "ms")], [], None),
    ]
    if reconnect_ok:
        checks.append(("reconnect", "passed", [Metric("prompt_to_drop", 4.1, "s"), Metric("back_to_reconnected", 0.3, "s"),
                                               Metric("reconnect_attempts", 2, ""), Metric("downtime", 14.2, "s")],
                       [], None))
    else:
        checks.append(("reconnect", "failed", [Metric("prompt_to_drop", 4.1, "s"), Metric("reconnect_attempts", 5, "")],
                       ["Hint: Check `max_reconnect_attempts` in config", "Hint: Verify `reconnect_delay` is appropriate"],
                       "Auto-reconnect gave up after 5 attempts (52.0 s): Connection refused on 127.0.0.1:4002"))
    checks.append(("errors", "passed", [Metric("rows_ok", 7, ""), Metric("rows", 7, "")],
                   ["ok: refused port: GatewayRefused in 0.00 s (expected GatewayRefused within 1 s)"], None))
    for name, status, metrics, findings, error in checks:
        check = await repo.start_check(run, name)
        await repo.finish_check(check, status, metrics=metrics, findings=findings, error=error)
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
