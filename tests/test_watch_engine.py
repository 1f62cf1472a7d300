"""The watch's decision engine and schedule, driven by a fake clock: hours pass in microseconds."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from bot.config import WatchConfig
from bot.ibkr.errors import Layer
from bot.watch.alerts import Alert, AlertAction, AlertKind, duration
from bot.watch.engine import Engine
from bot.watch.memory import Remembered
from bot.watch.schedule import NEW_YORK, REGIONS, Schedule, Window, WindowKind, default_windows
from bot.watch.state import (
    CameBack,
    DownCause,
    FarmState,
    OutageCategory,
    Recovery,
    RecoveryHow,
    WentDown,
)

WED = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # 10:00 New York: no window
BACK = Recovery(RecoveryHow.RECONNECTED, attempts=1)
KEPT = Recovery(RecoveryHow.LINK_RESTORED, code=1102)


class FakeClock:
    """Both of the watch's clocks from one true time ``now``; ``skew`` steps the wall clock alone
    (what NTP does), leaving the monotonic clock where it was."""

    def __init__(self, at: datetime) -> None:
        self.start = self.now = at
        self.skew = timedelta(0)

    def wall(self) -> datetime:
        return self.now + self.skew

    def mono(self) -> float:
        return 1000.0 + (self.now - self.start).total_seconds()

    def at(self, seconds: float) -> datetime:
        return self.start + timedelta(seconds=seconds)

    def true_time(self, mono: float) -> datetime:
        return self.start + timedelta(seconds=mono - 1000.0)


def make(at: datetime = WED, remembered: Remembered | None = None, clock: FakeClock | None = None,
         **settings) -> tuple[Engine, FakeClock]:
    clock = clock or FakeClock(at)
    return Engine("paper", WatchConfig(**settings), clock, remembered), clock


def run(engine: Engine, clock: FakeClock, seconds: float) -> list[Alert]:
    """Advance to start + seconds, ticking at every due time; no due time may stay in the past."""
    until = clock.at(seconds)
    out: list[Alert] = []
    while True:
        due = engine.next_due()
        if due is None or clock.true_time(due) > until:
            clock.now = max(clock.now, until)
            return out + engine.tick()
        clock.now = max(clock.now, clock.true_time(due))
        out += engine.tick()
        nxt = engine.next_due()
        assert nxt is None or nxt > clock.mono(), f"due time {nxt} left in the past at {clock.now}"


def see(engine: Engine, clock: FakeClock, seconds: float, obs_factory) -> list[Alert]:
    out = run(engine, clock, seconds)
    return out + engine.observe(obs_factory(clock.now))


def down(cause=DownCause.CLOSED, layer=Layer.TCP_PORT, code=None):
    return lambda at: WentDown(at, cause, layer, code=code)


def still(cause, layer):
    return lambda at: WentDown(at, cause, layer)


def back(recovery=BACK):
    return lambda at: CameBack(at, recovery)


def kinds(alerts: list[Alert]) -> list[tuple[AlertKind, bool]]:
    return [(a.kind, a.edit) for a in alerts]


def test_a_drop_shorter_than_down_after_sends_nothing():
    engine, clock = make(down_after=3)
    assert see(engine, clock, 0, down()) == []
    assert see(engine, clock, 2.9, back()) == []
    assert run(engine, clock, 3600) == []
    assert engine.take_updates()[-1].duration(clock.now) == pytest.approx(2.9)


def test_down_after_debounce_then_recovered_with_downtime_and_how():
    engine, clock = make(down_after=3)
    see(engine, clock, 0, down())
    alerts = see(engine, clock, 0.3, still(DownCause.REFUSED, Layer.TCP_PORT))
    alerts += run(engine, clock, 3)
    assert kinds(alerts) == [(AlertKind.DOWN, False)]
    down_alert = alerts[0]
    assert down_alert.loud and down_alert.actions == (AlertAction.ACKNOWLEDGE, AlertAction.MUTE_1H)
    assert down_alert.text == ("🔴 paper is DOWN — closed by the Gateway (TCP port refused since 15:00:00). "
                               "Layer: TCP port.")
    alerts = see(engine, clock, 94, back(Recovery(RecoveryHow.RECONNECTED, attempts=3)))
    assert kinds(alerts) == [(AlertKind.RECOVERED, False)]
    assert not alerts[0].loud
    assert alerts[0].text == "🟢 paper is back after 1 min 34 s — reconnected (3 attempts)."


def test_reminders_until_acknowledged_and_ack_clears_on_recovery():
    engine, clock = make(down_after=3, remind_every=900)
    see(engine, clock, 0, down(DownCause.FROZEN, Layer.API_READY))
    alerts = run(engine, clock, 1900)
    assert kinds(alerts) == [(AlertKind.DOWN, False), (AlertKind.REMINDER, False), (AlertKind.REMINDER, False)]
    assert alerts[1].text.startswith("⏰ paper still down for 15 min — frozen (no heartbeat answer)")
    key = engine.incident.key
    assert engine.acknowledge("bob", key="paper@1") == [], "a stale button does nothing"
    clock.now = clock.at(2000)
    edits = engine.acknowledge("alice", key=key)
    assert kinds(edits) == [(AlertKind.DOWN, True)]
    assert edits[0].message_key == alerts[0].message_key, "the ack edits the 🔴 message"
    assert "✋ Taken by alice at 15:33:20." in edits[0].text and edits[0].actions == ()
    assert engine.acknowledge("bob") == [], "taken already"
    assert run(engine, clock, 9000) == [], "no reminders once acknowledged"
    recovered = see(engine, clock, 9100, back())
    assert "alice had taken it" in recovered[0].text
    see(engine, clock, 9200, down())
    again = run(engine, clock, 9300)
    assert kinds(again) == [(AlertKind.DOWN, False)] and again[0].actions, "a new outage needs a new ack"
    assert engine.incident.acked_by is None


def test_flapping_becomes_one_summary_then_quiet_until_it_settles():
    engine, clock = make(down_after=3, flap_count=6, flap_window=600, flap_quiet=300)
    alerts: list[Alert] = []
    for i in range(6):  # 12 changes, each drop 1 s: under the debounce, so nothing but flapping
        alerts += see(engine, clock, i * 20, down())
        alerts += see(engine, clock, i * 20 + 1, back())
    assert kinds(alerts) == [(AlertKind.FLAPPING, False)]
    assert alerts[0].text.startswith("🟠 paper is flapping — 7 drops and returns within 10 min")
    alerts = see(engine, clock, 200, down())  # stays down 60 s: still quiet while flapping
    alerts += see(engine, clock, 260, back())
    assert alerts == []
    settled = run(engine, clock, 260 + 300)
    assert kinds(settled) == [(AlertKind.RECOVERED, False)]
    assert "Stable again after" in settled[0].text
    # Flapping again, and this time it ends down: one 🔴 once it stayed down flap_quiet.
    alerts = []
    for i in range(4):
        alerts += see(engine, clock, 1000 + i * 10, down())
        alerts += see(engine, clock, 1000 + i * 10 + 1, back())
    alerts += see(engine, clock, 1100, down())
    alerts += run(engine, clock, 1500)
    assert kinds(alerts) == [(AlertKind.FLAPPING, False), (AlertKind.DOWN, False)]
    assert alerts[1].at == clock.at(1400) and "flapped" in alerts[1].text


def test_mute_sends_nothing_and_what_is_still_true_comes_at_its_end():
    engine, clock = make(down_after=3)
    engine.mute(clock.at(3600))
    see(engine, clock, 10, down())
    see(engine, clock, 20, back())
    see(engine, clock, 100, down())
    alerts = run(engine, clock, 4000)
    assert kinds(alerts) == [(AlertKind.DOWN, False)]
    assert alerts[0].at == clock.at(3600)
    engine.mute(clock.at(5000))
    assert see(engine, clock, 4100, back()) == []
    engine.mute(None)
    see(engine, clock, 4200, down())
    assert kinds(run(engine, clock, 4300)) == [(AlertKind.DOWN, False)]


def test_nightly_reset_is_one_quiet_note_edited_on_return_and_no_down():
    at = datetime(2026, 11, 26, 5, 30, tzinfo=UTC)  # 00:30 EST, inside 00:15-01:45
    engine, clock = make(at, down_after=3)
    see(engine, clock, 0, down(DownCause.IB_LINK, Layer.IB_LINK, code=1100))
    alerts = run(engine, clock, 30)
    alerts += engine.observe(CameBack(clock.now, KEPT))
    alerts += run(engine, clock, 7200)
    assert kinds(alerts) == [(AlertKind.EXPECTED, False), (AlertKind.EXPECTED, True)]
    assert not any(a.loud for a in alerts)
    assert alerts[0].text == ("🟡 paper: IB link lost (1100) inside the nightly reset window (00:15–01:45 EST) "
                              "— expected.")
    assert alerts[1].text.endswith("— expected. Back after 30 s, IB link restored, data kept (1102).")
    assert alerts[1].message_key == alerts[0].message_key
    stored = engine.take_updates()[-1]
    assert stored.window is not None and stored.category is OutageCategory.IB_LINK and not stored.open


def test_expected_outage_escalates_when_not_back_by_window_end_plus_grace():
    at = datetime(2026, 11, 26, 5, 30, tzinfo=UTC)
    engine, clock = make(at, down_after=3, grace=300)
    see(engine, clock, 0, down(DownCause.IB_LINK, Layer.IB_LINK, code=1100))
    alerts = run(engine, clock, 3 * 3600)
    assert [a.kind for a in alerts][:2] == [AlertKind.EXPECTED, AlertKind.DOWN]
    escalated = alerts[1]
    assert escalated.at == datetime(2026, 11, 26, 6, 50, tzinfo=UTC), "01:45 EST + 5 min"
    assert escalated.loud and "Not back after the nightly reset window (00:15–01:45 EST) ended" in escalated.text


def test_windows_follow_daylight_saving():
    nightly = default_windows()[0]
    # 2026-03-08: New York springs forward at 02:00. The reset stays at 00:15 local time.
    assert nightly.occurrence_on(datetime(2026, 3, 8, 12, tzinfo=UTC)).start == datetime(2026, 3, 8, 5, 15, tzinfo=UTC)
    assert nightly.occurrence_on(datetime(2026, 3, 9, 12, tzinfo=UTC)).start == datetime(2026, 3, 9, 4, 15, tzinfo=UTC)
    # A window across the change is an hour shorter in real time.
    night = Window("night", time(23), time(4), NEW_YORK, frozenset({5}))
    occ = night.occurrence_on(datetime(2026, 3, 7, 20, tzinfo=UTC))
    assert occ.end - occ.start == timedelta(hours=4)
    # Europe changes three weeks later, on its own date.
    europe = Schedule(REGIONS["europe"])
    assert europe.window_at(datetime(2026, 3, 28, 6, 0, tzinfo=UTC)) is not None  # 07:00 CET
    assert europe.window_at(datetime(2026, 3, 29, 6, 0, tzinfo=UTC)) is None      # 08:00 CEST
    assert europe.window_at(datetime(2026, 3, 28, 4, 30, tzinfo=UTC)) is None      # 05:30 CET
    assert europe.window_at(datetime(2026, 3, 29, 4, 30, tzinfo=UTC)) is not None  # 06:30 CEST
    # The weekend maintenance is Friday night to Saturday morning, New York time.
    weekend = Schedule().window_at(datetime(2026, 11, 28, 7, 0, tzinfo=UTC))  # Sat 02:00 EST
    assert weekend is not None and weekend.window.kind is WindowKind.MAINTENANCE
    assert weekend.label == "weekend maintenance window (Fri 23:00–Sat 03:00 EST)"


def test_engine_judges_windows_in_local_time_across_the_dst_change():
    # 04:30 UTC is 00:30 EDT on Monday 9 March (inside the reset) but 23:30 EST on Sunday 1 March.
    cases = ((datetime(2026, 3, 9, 4, 30, tzinfo=UTC), True), (datetime(2026, 3, 2, 4, 30, tzinfo=UTC), False))
    for at, expected in cases:
        engine, clock = make(at, down_after=3)
        see(engine, clock, 0, down(DownCause.IB_LINK, Layer.IB_LINK, code=1100))
        alerts = run(engine, clock, 10)
        assert [a.kind for a in alerts] == [AlertKind.EXPECTED if expected else AlertKind.DOWN], at


def test_a_checks_deliberate_stop_is_not_an_outage():
    engine, clock = make(down_after=3)
    engine.suppress("reconnect check", clock.at(60))
    see(engine, clock, 1, down(DownCause.RESET))
    alerts = see(engine, clock, 20, back())
    alerts += run(engine, clock, 100)
    assert alerts == []
    assert engine.take_updates()[-1].category is OutageCategory.TEST
    # Still down when the check lets go: an outage from then on, debounced from the release.
    engine.suppress("reconnect check", clock.at(200))
    see(engine, clock, 110, down(DownCause.RESET))
    alerts = run(engine, clock, 150)
    engine.suppress("reconnect check", None)
    alerts += run(engine, clock, 300)
    assert kinds(alerts) == [(AlertKind.DOWN, False)] and alerts[0].at == clock.at(153)
    assert alerts[0].incident.test is None, "the 🔴 is a real outage's"


def test_a_gateway_the_watch_sees_back_just_after_the_check_let_go_stays_the_checks_stop():
    """The check's own client reconnects first and ends the step; the watch's rejoins a moment later."""
    engine, clock = make(down_after=3)
    engine.suppress("reconnect check", clock.at(600))
    see(engine, clock, 1, down(DownCause.RESET))
    run(engine, clock, 50)
    engine.suppress("reconnect check", None)
    alerts = see(engine, clock, 51.5, back()) + run(engine, clock, 100)
    assert alerts == []
    [closed] = [i for i in engine.take_updates() if not i.open]
    assert closed.test == "reconnect check" and closed.category is OutageCategory.TEST


def test_a_restart_that_waits_at_its_login_says_so_without_claiming_a_2fa():
    engine, clock = make(down_after=3, login_timeout=180)
    see(engine, clock, 0, down(DownCause.RESET))
    see(engine, clock, 0.5, still(DownCause.REFUSED, Layer.TCP_PORT))
    alerts = see(engine, clock, 40, still(DownCause.NOT_LOGGED_IN, Layer.API_READY))
    assert kinds(alerts + run(engine, clock, 69)) == [(AlertKind.DOWN, False)], \
        "an API still initialising after a restart is not a login screen yet"
    alerts = run(engine, clock, 600)
    assert kinds(alerts) == [(AlertKind.LOGIN_WAIT, False)], "no countdown, no 'ran out' edit"
    wait = alerts[0]
    assert wait.loud and wait.at == clock.at(70) and wait.deadline is None
    assert wait.text == ("🔐 paper waits at its login — the Gateway restarted and its API is not ready since "
                         "15:00:40 (30 s): a login screen or a dialog waits on the Gateway.")
    assert "2FA" not in wait.text
    # Not logged in from the start (no restart seen) is a plain 🔴, no login alert.
    engine, clock = make(down_after=3)
    see(engine, clock, 0, down(DownCause.NOT_LOGGED_IN, Layer.API_READY))
    assert kinds(run(engine, clock, 600)) == [(AlertKind.DOWN, False)]


def test_a_restart_after_the_weekly_token_expiry_needs_2fa_with_a_countdown():
    sat = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # up since Saturday; the tokens expire Sun 06:00 UTC
    engine, clock = make(sat, down_after=3, login_timeout=180, relogin_reminder=0)
    see(engine, clock, 0, back())  # connected: its session predates Sunday's expiry
    start = 22 * 3600  # Sunday 10:00 UTC
    see(engine, clock, start, down(DownCause.RESET))
    see(engine, clock, start + 0.5, still(DownCause.REFUSED, Layer.TCP_PORT))
    alerts = see(engine, clock, start + 40, still(DownCause.NOT_LOGGED_IN, Layer.API_READY))
    alerts += run(engine, clock, start + 400)
    assert kinds(alerts) == [(AlertKind.DOWN, False), (AlertKind.NEEDS_2FA, False), (AlertKind.NEEDS_2FA, True)]
    need = alerts[1]
    assert need.loud and need.at == clock.at(start + 70) and need.deadline == clock.at(start + 220)
    assert need.text.startswith("🔐 paper needs a 2FA login — the Gateway restarted after the weekly token expiry")
    assert "within 2 min 30 s (by 10:03:40; IBC waits 3 min)" in need.text
    assert "ran out at 10:03:40" in alerts[2].text and not alerts[2].loud
    # Up again after someone logged in: the next restart that week needs no 2FA.
    see(engine, clock, start + 500, back())
    alerts = see(engine, clock, start + 3600, down(DownCause.RESET))
    alerts += see(engine, clock, start + 3601, still(DownCause.REFUSED, Layer.TCP_PORT))
    alerts += see(engine, clock, start + 3640, still(DownCause.NOT_LOGGED_IN, Layer.API_READY))
    assert [a.kind for a in alerts + run(engine, clock, start + 4000)] == [AlertKind.DOWN, AlertKind.LOGIN_WAIT]


def test_a_farm_broken_past_its_grace_is_a_quiet_warning_edited_when_ok():
    engine, clock = make(farm_grace=60)
    see(engine, clock, 0, lambda at: CameBack(at, BACK))
    assert see(engine, clock, 1, lambda at: FarmState("usfarm", False, 2103, at)) == []
    assert see(engine, clock, 30, lambda at: FarmState("usfarm", True, 2104, at)) == []
    see(engine, clock, 100, lambda at: FarmState("usfarm", False, 2103, at))
    alerts = run(engine, clock, 200)
    alerts += engine.observe(FarmState("usfarm", True, 2104, clock.now))
    assert kinds(alerts) == [(AlertKind.FARM_WARNING, False), (AlertKind.FARM_WARNING, True)]
    assert not alerts[0].loud and alerts[0].text == "🟡 paper: data farm usfarm broken for 1 min (2103)."
    assert alerts[1].message_key == alerts[0].message_key
    assert "OK again since 15:03:20" in alerts[1].text


def test_weekly_relogin_reminder_before_the_sunday_token_expiry():
    engine, clock = make(datetime(2026, 11, 28, 12, 0, tzinfo=UTC), relogin_reminder=3600)
    alerts = run(engine, clock, 24 * 3600)
    assert kinds(alerts) == [(AlertKind.RELOGIN_REMINDER, False)]
    assert alerts[0].at == datetime(2026, 11, 29, 5, 0, tzinfo=UTC)
    assert "tokens expire Sun 01:00 EST (in 1 h)" in alerts[0].text and alerts[0].loud
    assert Schedule.next_relogin(datetime(2026, 7, 4, tzinfo=UTC)) == datetime(2026, 7, 5, 5, 0, tzinfo=UTC)  # EDT


def test_durations_read_well():
    assert [duration(s) for s in (0.4, 40, 94, 600, 900, 7500, 90000)] == [
        "0 s", "40 s", "1 min 34 s", "10 min", "15 min", "2 h 5 min", "1 d 1 h"]


def test_every_connect_failure_has_words_and_a_layer():
    from bot.ibkr import errors
    from bot.watch.watcher import classify

    for cls in errors.GatewayError.__subclasses__():
        cause, layer = classify(cls("x"))
        assert cause.words and cause.now_words and isinstance(layer, Layer), cls
        assert cause is not DownCause.OTHER or cls is errors.NotConnected, f"{cls.__name__} has no words of its own"


def test_an_ntp_step_neither_fires_the_debounce_nor_the_reminder_early_nor_holds_them_back():
    engine, clock = make(down_after=30, remind_every=900)
    see(engine, clock, 0, down())
    clock.skew = timedelta(hours=1)  # the wall clock jumps an hour ahead
    assert run(engine, clock, 29) == [], "30 s of debounce are 30 s, whatever the wall clock says"
    alerts = run(engine, clock, 30)
    assert kinds(alerts) == [(AlertKind.DOWN, False)]
    clock.skew = timedelta(hours=-1)  # and back, further than it went
    assert run(engine, clock, 929) == []
    assert kinds(run(engine, clock, 930)) == [(AlertKind.REMINDER, False)], "not an hour late"


def test_a_mute_lasts_its_length_across_an_ntp_step():
    engine, clock = make(down_after=3)
    engine.mute(clock.wall() + timedelta(minutes=10))
    clock.skew = timedelta(hours=2)
    see(engine, clock, 10, down())
    assert run(engine, clock, 599) == [], "still muted: ten minutes have not passed"
    assert kinds(run(engine, clock, 601)) == [(AlertKind.DOWN, False)]


def _flap(engine: Engine, clock: FakeClock, changes: int) -> list[Alert]:
    alerts: list[Alert] = []
    for i in range(changes):
        alerts += see(engine, clock, i * 10, down())
        alerts += see(engine, clock, i * 10 + 1, back())
    return alerts


def test_flapping_that_settles_into_a_checks_stop_stays_quiet():
    engine, clock = make(down_after=3, flap_count=6, flap_window=600, flap_quiet=300)
    assert [a.kind for a in _flap(engine, clock, 4)] == [AlertKind.FLAPPING]
    engine.suppress("reconnect check", clock.at(2000))
    see(engine, clock, 100, down(DownCause.RESET))  # the check stops the Gateway on purpose
    assert run(engine, clock, 1000) == [], "a deliberate test stop is never a loud 🔴"
    assert engine.incident.test == "reconnect check"


def test_flapping_that_settles_inside_an_expected_window_is_the_windows_note_not_a_down():
    at = datetime(2026, 11, 26, 5, 20, tzinfo=UTC)  # 00:20 EST
    engine, clock = make(at, down_after=3, flap_count=6, flap_window=600, flap_quiet=300,
                         expected=(Window("nightly reset", time(0, 21), time(1, 45), NEW_YORK),))
    assert [a.kind for a in _flap(engine, clock, 4)] == [AlertKind.FLAPPING]  # 00:20:00-00:20:31: before it
    alerts = see(engine, clock, 60, down(DownCause.IB_LINK, Layer.IB_LINK, code=1100))  # 00:21, in the window
    alerts += run(engine, clock, 1200)
    assert [a.kind for a in alerts] == [AlertKind.EXPECTED] and not alerts[0].loud


def test_a_relogin_reminder_is_sent_at_once_when_gwbot_starts_inside_its_lead_and_never_twice():
    sun = datetime(2026, 11, 29, 5, 30, tzinfo=UTC)  # 00:30 EST: the tokens expire in 30 min
    engine, clock = make(sun, relogin_reminder=3600)
    alerts = engine.tick()
    assert kinds(alerts) == [(AlertKind.RELOGIN_REMINDER, False)]
    assert "(in 30 min)" in alerts[0].text
    remembered = engine.take_remembered()
    assert remembered is not None and remembered.relogin_sent_for == datetime(2026, 11, 29, 6, 0, tzinfo=UTC)
    # gwbot restarts ten minutes later: the reminder was sent, so not again; next week's comes.
    clock.now = clock.at(600)
    again, _ = make(remembered=remembered, clock=clock, relogin_reminder=3600)
    assert run(again, clock, 3600) == []
    week = run(again, clock, 7 * 86400)
    assert kinds(week) == [(AlertKind.RELOGIN_REMINDER, False)]
    assert week[0].at == datetime(2026, 12, 6, 5, 0, tzinfo=UTC)


def test_a_muted_relogin_reminder_comes_when_the_mute_ends_if_still_in_time():
    engine, clock = make(datetime(2026, 11, 29, 4, 0, tzinfo=UTC), relogin_reminder=3600)
    engine.mute(clock.at(1800))  # muted over the reminder's time (05:00)
    alerts = run(engine, clock, 7200)
    assert kinds(alerts) == [(AlertKind.RELOGIN_REMINDER, False)] and alerts[0].at == clock.at(3600)


def test_incident_keys_never_repeat_not_within_a_millisecond_nor_after_the_clock_steps_back():
    engine, clock = make(down_after=0)
    see(engine, clock, 0, down())
    first = engine.incident.key
    see(engine, clock, 0, back())
    see(engine, clock, 0, down())  # the same millisecond
    second = engine.incident.key
    see(engine, clock, 1, back())
    clock.skew = timedelta(seconds=-30)  # NTP steps the wall clock back past both starts
    see(engine, clock, 2, down())
    assert len({first, second, engine.incident.key}) == 3, "a repeated key would edit the old outage's 🔴"
