"""/uptime from incidents stored in a real SQLite file: windows left out, causes split, gwbot restarts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.ibkr.errors import Layer
from bot.watch.alerts import AlertKind
from bot.watch.schedule import Schedule
from bot.watch.state import DownCause, Incident, OutageCategory, Recovery, RecoveryHow
from bot.watch.uptime import timeline_png, uptime_report
from storage import Repository
from storage.incidents import ENDED_UNWATCHED
from tests.test_watch import Collect, config_for, until, watch_for

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # Wednesday 10:00 New York


def incident(start: datetime, minutes: float | None, cause: DownCause, **kw) -> Incident:
    end = None if minutes is None else start + timedelta(minutes=minutes)
    return Incident("paper", start, cause, Layer.TCP_PORT, cause, start, ended_at=end,
                    recovery=Recovery(RecoveryHow.RECONNECTED, 1) if end else None, **kw)


async def test_availability_leaves_windows_out_and_splits_causes(tmp_path):
    async with await Repository.open(tmp_path / "gwbot.sqlite3") as repo:
        store = repo.incidents
        cov = await store.watch_started("paper", NOW - timedelta(days=2))
        schedule = Schedule()
        reset = schedule.window_at(datetime(2026, 11, 25, 5, 30, tzinfo=UTC))  # 00:30 EST
        for inc in (
            incident(NOW - timedelta(hours=3), 10, DownCause.RESET, port_closed=True),          # restart 10 min
            incident(datetime(2026, 11, 25, 5, 30, tzinfo=UTC), 20, DownCause.IB_LINK, code=1100, window=reset),
            incident(NOW - timedelta(hours=2), 5, DownCause.CLOSED, test="reconnect check"),    # counts nowhere
            incident(NOW - timedelta(hours=1), None, DownCause.FROZEN),                          # still down
        ):
            await store.save(inc.record())
        await store.watch_seen(cov, NOW - timedelta(seconds=30))
        report = await uptime_report(repo.incidents, "paper", schedule, NOW)
    day, week, month = report.periods
    # The last 24 h hold the nightly reset (1 h 30 min) and the 23:45 auto-restart window (10 min).
    assert day.watched == 24 * 3600 - 100 * 60
    assert day.down == 70 * 60
    assert day.percent == pytest.approx(100 * (1 - 4200 / 80400))
    assert day.by_category == {OutageCategory.RESTART: 600, OutageCategory.FROZEN: 3600,
                               OutageCategory.SCHEDULED: 1200}
    assert week.down == month.down == day.down and week.watched == month.watched  # watched two days only
    text = report.text
    assert text.splitlines()[1] == "24 h: 94.78 % — down 1 h 10 min"
    assert "7 d: 97." in text and "watched 1 d 20 h" in text
    assert "scheduled 20 min (not counted)" in text
    assert "• Nov 25 14:00:00–ongoing (1 h) frozen" in text
    assert "test: reconnect check" in text
    png = timeline_png(report)
    assert png.startswith(b"\x89PNG") and len(report.days) == 14


async def test_an_incident_open_when_gwbot_stopped_ends_at_its_last_sign_of_life(tmp_path):
    path = tmp_path / "gwbot.sqlite3"
    t0 = NOW - timedelta(hours=6)
    async with await Repository.open(path) as repo:
        store = repo.incidents
        cov = await store.watch_started("paper", t0)
        await store.save(incident(t0 + timedelta(hours=1), None, DownCause.REFUSED, port_closed=True).record())
        await store.watch_seen(cov, t0 + timedelta(hours=2))
    async with await Repository.open(path) as repo:  # gwbot started again, three hours later
        store = repo.incidents
        cov = await store.watch_started("paper", t0 + timedelta(hours=5))
        await store.watch_seen(cov, NOW)
        (stored,) = await repo.incidents.incidents("paper", t0, NOW)
        assert stored.ended_at == t0 + timedelta(hours=2) and stored.recovery == ENDED_UNWATCHED
        report = await uptime_report(repo.incidents, "paper", Schedule(windows=()), NOW)
    day = report.periods[0]
    # Watched 2 h, then nothing for 3 h, then the last hour: the gap is neither up nor down.
    assert day.watched == 3 * 3600 and day.down == 3600


async def test_a_restart_is_told_from_a_stopped_or_killed_gateway_by_how_it_went(tmp_path):
    """A real Gateway's restart resets its clients (RST); a stopped or SIGKILLed one closes them
    (FIN) or is simply gone (refused). Inside the auto-restart window it is a restart whatever it looked like."""
    async with await Repository.open(tmp_path / "gwbot.sqlite3") as repo:
        store = repo.incidents
        cov = await store.watch_started("paper", NOW - timedelta(days=1))
        restart = datetime(2026, 11, 25, 4, 50, tzinfo=UTC)  # 23:50 New York: 5 min inside the 23:45-23:55 window
        for inc in (
            incident(NOW - timedelta(hours=5), 10, DownCause.RESET, port_closed=True),   # restart 10 min
            incident(NOW - timedelta(hours=4), 4, DownCause.CLOSED, port_closed=True),   # stopped 4 min
            incident(NOW - timedelta(hours=3), 3, DownCause.REFUSED, port_closed=True),  # stopped 3 min
            incident(NOW - timedelta(hours=2), 2, DownCause.CLOSED),                     # came straight back
            incident(restart, 10, DownCause.CLOSED, port_closed=True),  # restart 5 min, stopped 5 min
        ):
            await store.save(inc.record())
        await store.watch_seen(cov, NOW - timedelta(seconds=30))
        report = await uptime_report(repo.incidents, "paper", Schedule(), NOW)
    assert report.periods[0].by_category == {OutageCategory.RESTART: 15 * 60, OutageCategory.STOPPED: 12 * 60,
                                             OutageCategory.RESET_CLOSED: 2 * 60}
    assert "Down time by cause (30 d): restart 15 min · stopped 12 min · reset/closed 2 min" in report.text
    assert [line.rsplit(") ", 1)[1] for line in report.text.splitlines() if line.startswith("• ")] == [
        "reset/closed", "stopped", "stopped", "restart", "stopped"]


@pytest.mark.parametrize(("reset", "cause", "category"), [(False, "closed", OutageCategory.STOPPED),
                                                           (True, "reset", OutageCategory.RESTART)])
async def test_the_watch_stores_its_outages_and_uptime_reads_them(gateway, tmp_path, reset, cause, category):
    sink = Collect()
    async with await Repository.open(tmp_path / "gwbot.sqlite3") as repo:
        async with watch_for(config_for(gateway), sink, store=repo.incidents) as watch:
            await until(lambda: watch.watcher().state.phase.value == "up")
            await gateway.stop(reset=reset)
            await sink.wait_for(AlertKind.DOWN)
            await gateway.start()
            await sink.wait_for(AlertKind.RECOVERED)
        now = datetime.now(UTC)
        (stored,) = await repo.incidents.incidents("paper", now - timedelta(hours=1), now)
        report = await uptime_report(repo.incidents, "paper", Schedule(windows=()), now)
    assert stored.alerted and stored.ended_at is not None and stored.category == category
    assert stored.cause == cause and stored.recovery.startswith("reconnected")
    assert report.periods[0].percent < 100 and report.periods[0].down == pytest.approx(
        (stored.ended_at - stored.started_at).total_seconds())
