"""What the watch remembers across a restart of gwbot: the open outage, who took it, a mute.

The engine's memory through its JSON form, then whole watchers on a real SQLite file against the
real simulated Gateway: the second gwbot takes the outage up where the first left it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from bot.config import WatchConfig
from bot.ibkr.errors import Layer
from bot.watch.alerts import AlertKind
from bot.watch.memory import from_json, to_json
from bot.watch.state import DownCause, Phase
from storage import Repository
from tests.test_watch import Collect, config_for, until, watch_for
from tests.test_watch_engine import WED, FakeClock, down, kinds, make, run, see, still


def test_an_acknowledged_muted_outage_is_taken_up_again_without_a_new_alert():
    settings = {"down_after": 3, "remind_every": 900}
    engine, clock = make(**settings)
    see(engine, clock, 0, down(DownCause.RESET))
    see(engine, clock, 1, still(DownCause.REFUSED, Layer.TCP_PORT))
    assert kinds(run(engine, clock, 10)) == [(AlertKind.DOWN, False)]
    key = engine.incident.key
    engine.acknowledge("alice", key)
    engine.mute(clock.wall() + timedelta(hours=1))
    stored = to_json(engine.take_remembered())
    assert engine.take_remembered() is None, "unchanged since: nothing to store"

    clock.now = clock.at(60)  # a minute later another gwbot starts from what was stored
    again, _ = make(remembered=from_json(stored, WatchConfig(**settings).schedule), clock=clock, **settings)
    assert again.incident is not None and again.incident.key == key, "the same outage, not a new one"
    assert again.incident.acked_by == "alice" and again.incident.alerted_at is not None
    assert again.muted_until == clock.at(10) + timedelta(hours=1)
    assert see(again, clock, 61, still(DownCause.REFUSED, Layer.TCP_PORT)) == []
    assert run(again, clock, 3 * 3600) == [], "acknowledged: no reminders; nothing loud again"


def test_a_remembered_outage_still_in_its_debounce_alerts_when_the_debounce_ends():
    engine, clock = make(down_after=30)
    see(engine, clock, 0, down())
    stored = to_json(engine.take_remembered())
    clock.now = clock.at(10)
    again, _ = make(remembered=from_json(stored, WatchConfig().schedule), clock=clock, down_after=30)
    assert run(again, clock, 29) == []
    assert kinds(run(again, clock, 31)) == [(AlertKind.DOWN, False)]


def test_a_checks_stop_remembered_is_an_outage_once_its_check_is_gone():
    engine, clock = make(down_after=3)
    engine.suppress("reconnect check", clock.at(600))
    see(engine, clock, 0, down(DownCause.RESET))
    stored = to_json(engine.take_remembered())
    clock.now = clock.at(20)
    again, _ = make(remembered=from_json(stored, WatchConfig().schedule), clock=clock, down_after=3)
    assert again.incident.test is None
    alerts = run(again, clock, 30)
    assert kinds(alerts) == [(AlertKind.DOWN, False)] and alerts[0].at == clock.at(23), "debounced from the restart"


def test_an_expired_mute_is_not_taken_up():
    engine, clock = make()
    engine.mute(clock.wall() + timedelta(minutes=5))
    stored = to_json(engine.take_remembered())
    clock = FakeClock(WED + timedelta(minutes=6))
    again, _ = make(remembered=from_json(stored, WatchConfig().schedule), clock=clock)
    assert again.muted_until is None


async def _memory_says(repo: Repository, *words: str) -> None:
    async with asyncio.timeout(8):
        while True:
            stored = await repo.incidents.recall("paper") or ""
            if all(w in stored for w in words):
                return
            await asyncio.sleep(0.02)


async def test_a_restarted_watch_keeps_the_outage_its_acknowledgement_and_its_mute(gateway, tmp_path):
    config = config_for(gateway, remind_every=60)
    repo = await Repository.open(tmp_path / "gwbot.sqlite3")
    try:
        first = Collect()
        async with watch_for(config, first, store=repo.incidents) as watch:
            await until(lambda: watch.watcher().state.phase is Phase.UP)
            await gateway.stop()
            red = await first.wait_for(AlertKind.DOWN)
            assert watch.acknowledge(red.incident.key, "alice")
            muted_until = datetime.now(UTC) + timedelta(minutes=59)
            watch.mute("paper", muted_until)
            await _memory_says(repo, '"acked_by": "alice"', muted_until.isoformat())

        second = Collect()
        async with watch_for(config, second, store=repo.incidents) as watch:
            watcher = watch.watcher()
            await until(lambda: watcher.state.phase is Phase.DOWN)
            inc = watcher.engine.incident
            assert inc is not None and inc.key == red.incident.key and inc.acked_by == "alice"
            assert watcher.engine.muted_until == muted_until
            assert watcher.state.incident == inc, "/status shows the outage at once"
            assert await watch.find(red.incident.ref) == ("paper", red.incident.key), "the old 🔴's buttons work"
            await asyncio.sleep(0.5)  # several failed connection attempts: each one a chance to alert wrongly
            assert second.alerts == [], "the same outage: no new 🔴"
            now = datetime.now(UTC)
            stored = await repo.incidents.incidents("paper", now - timedelta(hours=1), now + timedelta(seconds=1))
            assert [(r.key, r.ended_at, r.acked_by) for r in stored] == [(red.incident.key, None, "alice")]
            watch.mute("paper", None)
            await gateway.start()
            back = await second.wait_for(AlertKind.RECOVERED)
            assert "alice had taken it" in back.text
    finally:
        await repo.close()
