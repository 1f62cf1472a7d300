"""Scheduled drills: ``drill:`` in config, the scheduler's decisions on a fake clock, and one
scheduled drill end to end whose result lands in the alert chat."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from bot.checks.soak import SoakOptions
from bot.config import Config, ConfigError, DrillConfig, IbcAddress, WatchConfig, load_config
from bot.drill_schedule import DrillScheduler, Verdict, scheduled_drills
from bot.lab.chat import lab_chat
from bot.lab.ibc_sim import IbcProfile
from bot.lab.operators import SilentOperator
from bot.lab.simctl import ControlServer
from bot.lab.telegram_standin import User
from bot.runner import RunRequest
from bot.services import open_services, with_gateway
from bot.watch.schedule import Recurring, Window
from bot.watch.state import Phase
from handlers.results import post_results
from tests.conftest import FAST, free_port
from tests.test_chat import KAI, SQUAD, Chat, chat_config
from tests.test_chat_watch import WATCH_OPTIONS, _until, alerts
from tests.test_ibc_sim import early_in_minute

SHAPE = "expected null (off) or a schedule {days, time: 'HH:MM', tz}"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_schedule_is_days_and_a_time_in_its_zone(tmp_path):
    text = """
drill:
  schedule: {days: [mon, thu], time: "17:30", tz: America/New_York}
  trading: [{name: session, days: weekdays, start: "09:30", end: "16:00", tz: America/New_York}]
"""
    drill = load_config(write(tmp_path, text), env={}).drill
    assert drill.schedule == Recurring(time(17, 30), "America/New_York", frozenset({0, 3}))
    assert drill.trading[0].name == "session" and drill.allow_live is False
    # Thursday 2026-11-26 14:00 UTC: next is that day 17:30 New York (EST: 22:30 UTC), then Monday.
    thursday = datetime(2026, 11, 26, 14, 0, tzinfo=UTC)
    first = drill.schedule.next_after(thursday)
    assert first == datetime(2026, 11, 26, 22, 30, tzinfo=UTC)
    assert drill.schedule.next_after(first) == datetime(2026, 11, 30, 22, 30, tzinfo=UTC)
    # In July New York is on EDT: the same 17:30 is 21:30 UTC.
    assert drill.schedule.next_after(datetime(2026, 7, 2, 0, 0, tzinfo=UTC)) == datetime(2026, 7, 2, 21, 30, tzinfo=UTC)
    assert load_config(write(tmp_path, ""), env={}).drill.schedule is None  # off unless configured


@pytest.mark.parametrize(("text", "message"), [
    ("drill: {schedule: '17:30'}", f"drill.schedule: {SHAPE}, e.g. {{days: weekdays, time: '17:30', "
                                   "tz: America/New_York}, got '17:30'"),
    ("drill: {schedule: {time: '17:30'}}", f"drill.schedule: {SHAPE}, e.g. {{days: weekdays, time: '17:30', "
                                           "tz: America/New_York}, got {'time': '17:30'}"),
    ("drill: {schedule: {time: '24:00', tz: UTC}}",
     f"drill.schedule: {SHAPE} with a time from '00:00' to '23:59', got {{'time': '24:00', 'tz': 'UTC'}}"),
    ("drill: {schedule: {days: [], time: '10:00', tz: UTC}}",
     f"drill.schedule: {SHAPE} with days 'daily', 'weekdays', 'weekends' or a list of mon..sun, "
     "got {'days': [], 'time': '10:00', 'tz': 'UTC'}"),
    ("drill: {schedule: {time: '10:00', tz: Mars/Base}}",
     f"drill.schedule: {SHAPE} with tz a time zone name such as America/New_York or UTC, "
     "got {'time': '10:00', 'tz': 'Mars/Base'}"),
    ("drill: {allow_live: 'yes'}", "drill.allow_live: expected true or false, got 'yes'"),
    ("drill: {trading: null}", "drill.trading: expected a list of windows like {name, days, start: 'HH:MM', "
                               "end: 'HH:MM', tz}, or [] for none, got None"),
    ("drill: {schedul: null}", "drill.schedul: unknown key (did you mean 'schedule'?)"),
])
def test_a_bad_drill_setting_is_one_line_naming_its_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), env={})
    assert str(err.value) == "config.yaml: " + message


# ------------------------------------------------------------------ the scheduler's decisions

WED = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # 10:00 New York: outside IBKR's windows
ALERTS = -100777


class FakeTimer:
    """The scheduler's wall clock, moved only by the test; ``sleeping`` is the moment it waits for."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.sleeping: datetime | None = None
        self._moved = asyncio.Event()

    def wall(self) -> datetime:
        return self.now

    async def sleep_until(self, at: datetime) -> None:
        self.sleeping = at
        while self.now < at:
            self._moved.clear()
            await self._moved.wait()
        self.sleeping = None

    def advance_to(self, at: datetime) -> None:
        self.now = at
        self._moved.set()


def drill_config(tmp_path: Path, *, account: str = "DU123", allow_live: bool = False, trading=(),
                 expected=None, gateway_port: int | None = None) -> Config:
    config = Config(data_dir=tmp_path, watch=WatchConfig(alert_chat_ids=frozenset({ALERTS}), expected=expected),
                    drill=DrillConfig(Recurring(time(15, 0), "UTC"), tuple(trading), allow_live))
    return with_gateway(config, account=account, port=gateway_port or free_port(), connect_timeout=1,
                        ibc=IbcAddress(free_port(), "127.0.0.1"))


def core(config: Config):
    """The core without a chat: storage, an outbox that stores (sends nothing), the Gateway jobs."""
    return open_services(config)


async def queued(services, chat_id: int = ALERTS) -> list[str]:
    return [row.message.text for row in await services.repo.outbox.pending(chat_id)]


async def test_inside_an_expected_or_trading_window_it_skips_with_a_log_line_only(tmp_path, caplog):
    reset = Window("nightly reset", time(14, 55), time(15, 5), "UTC")
    session = Window("US session", time(9, 30), time(16, 0), "America/New_York", frozenset(range(5)))
    for config in (drill_config(tmp_path, expected=(reset,)), drill_config(tmp_path, expected=(), trading=(session,))):
        async with core(config) as services:
            [decision] = await DrillScheduler(services, post_results, FakeTimer(WED)).drill_all(WED)
            assert decision.verdict is Verdict.WINDOW and decision.run_id is None
            assert await services.repo.list_runs() == [] and await queued(services) == []
    assert ("scheduled drill on paper skipped: it could overlap the nightly reset window (14:55–15:05 UTC)"
            in caplog.text)
    assert "it could overlap the US session window (Wed 09:30–16:00 EST)" in caplog.text
    # A window that begins while the drill could still run is avoided too: the drill takes up to its allowance.
    later = Window("reset", time(15, 8), time(15, 20), "UTC")
    async with core(drill_config(tmp_path, expected=(later,))) as services:
        assert DrillScheduler(services, post_results).decide(services.config.gateway(), WED).verdict is Verdict.WINDOW


async def test_a_live_account_is_skipped_with_a_note_unless_allow_live(tmp_path):
    async with core(drill_config(tmp_path, account="U1234567", expected=())) as services:
        scheduler = DrillScheduler(services, post_results)
        [decision] = await scheduler.drill_all(WED)
        assert decision.verdict is Verdict.LIVE and await services.repo.list_runs() == []
        assert await queued(services) == ["⏭ Scheduled drill on paper skipped: account U1234567 is live; set "
                                          "drill.allow_live: true to drill it anyway."]
    async with core(drill_config(tmp_path, account="U1234567", allow_live=True, expected=())) as services:
        assert DrillScheduler(services, post_results).decide(services.config.gateway(), WED).verdict is Verdict.DUE


async def test_another_run_on_the_gateway_is_skipped_with_a_note(tmp_path, gateway):
    config = drill_config(tmp_path, expected=(), gateway_port=gateway.port)
    async with core(config) as services:
        soak = await services.jobs.start(RunRequest(("soak",), "kai", "pytest", options=(SoakOptions(60),)),
                                         SilentOperator())
        [decision] = await DrillScheduler(services, post_results).drill_all(WED)
        assert decision.verdict is Verdict.BUSY
        assert await queued(services) == [f"⏭ Scheduled drill on paper skipped: soak run #{soak.run_id} (started by "
                                          "kai) was running on it."]
        assert [r.kind for r in await services.repo.list_runs()] == ["soak"]


async def test_at_its_time_it_drills_and_the_result_goes_to_the_alert_chats(tmp_path):
    """The loop on a fake clock: it waits for 15:00 UTC, and only then starts a drill run by "schedule"
    (this Gateway's port is closed: the drill fails at its connect, and that result is posted)."""
    timer = FakeTimer(WED.replace(hour=14, minute=30))
    async with core(drill_config(tmp_path, expected=())) as services, \
            scheduled_drills(services, post_results, timer):
        await _until(lambda: timer.sleeping is not None)
        assert timer.sleeping == WED
        timer.advance_to(WED - timedelta(seconds=1))
        await _until(lambda: timer.sleeping == WED)  # not yet
        assert await services.repo.list_runs() == []
        timer.advance_to(WED)
        await _until(lambda: timer.sleeping == WED + timedelta(days=1))  # drilled; the next is tomorrow's
        [run] = await services.repo.list_runs()
        assert (run.kind, run.started_by) == ("drill", "schedule")
        await _until_async(lambda: queued(services), lambda texts: len(texts) >= 2)
        texts = await queued(services)
        assert texts[0].startswith(f"❌ FAILED: drill on paper, run #{run.id}"), texts
        assert "by schedule from drill.schedule (daily at 15:00 UTC)" in texts[1]


async def test_a_drill_time_long_past_is_missed_not_run_late(tmp_path, caplog):
    timer = FakeTimer(WED - timedelta(minutes=1))
    async with core(drill_config(tmp_path, expected=())) as services, \
            scheduled_drills(services, post_results, timer):
        await _until(lambda: timer.sleeping == WED)
        timer.advance_to(WED + timedelta(hours=2))  # the machine slept through it
        await _until(lambda: timer.sleeping == WED + timedelta(days=1))
        assert await services.repo.list_runs() == []
    assert "scheduled drill of 2026-11-25 15:00 UTC missed" in caplog.text


async def _until_async(get, predicate, timeout: float = 8.0):
    async with asyncio.timeout(timeout):
        while not predicate(await get()):
            await asyncio.sleep(0.02)


async def test_a_scheduled_drill_end_to_end_lands_in_the_alert_chat(tmp_path):
    """gwbot chat with a simulated Gateway and its IBC command server: at the scheduled time the
    drill runs by itself, passes, the watch files the restart as a test, and the report reaches
    the squad's alert chat through the stand-in."""
    ctl_port = free_port()
    config = with_gateway(replace(chat_config(tmp_path), watch=WatchConfig(
        alert_chat_ids=frozenset({SQUAD}), down_after=0.3, expected=(), relogin_reminder=0),
        drill=DrillConfig(Recurring(time(15, 0), "UTC"))), ibc=IbcAddress(ctl_port, "127.0.0.1"))
    timer = FakeTimer(WED - timedelta(minutes=1))
    async with lab_chat(config, [User(KAI, "Kai", "kai")], {SQUAD: "squad"},
                        client_options={"probe_interval": FAST.probe_interval}, watch_options=WATCH_OPTIONS,
                        schedule_options={"timer": timer}) as lab:
        assert lab.gateway is not None
        lab.gateway.ibc.profile = IbcProfile(minute=0.4, down=0.6, ready_after=0.3)
        ctl = ControlServer(lab.gateway, port=ctl_port)
        await ctl.start()
        try:
            watcher = lab.services.watch.watcher()
            await _until(lambda: watcher.state.phase is Phase.UP and timer.sleeping == WED)
            await early_in_minute(lab.gateway.ibc.profile.minute)
            timer.advance_to(WED)
            report = await lab.standin.wait_for(lambda m: "Stage timeline" in m.text, SQUAD, 10)
            assert "by schedule from drill.schedule (daily at 15:00 UTC)" in report.text
            assert "IBC accepted RESTART" in report.text and "handshake answered" in report.text
            assert "Compared with earlier drills: this drill" in report.text
            assert "the first drill on this Gateway" in report.text
            run = await lab.services.repo.get_run(1)
            assert (run.status, run.started_by) == ("passed", "schedule")
            chat = Chat(lab.standin, lab.gateway, lab.services)
            assert alerts(chat, "🔴") == [], "the scheduled drill's own restart is no outage"
        finally:
            await ctl.stop()
