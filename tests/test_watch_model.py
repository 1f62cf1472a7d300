"""The watch, model-checked: random interleavings of what Gateways do and what people do, with the
invariants an alerting tool promises checked after every step.

The real watchers (their judging of client events, the engine, the memory) on a real SQLite file,
two Gateways sharing it; only the sockets are replaced by the events ib_async would deliver, and
time by a fake clock whose wall clock can also step like NTP does. Rules: connect, fail to connect
(refused, not logged in, closed, client id), drops (FIN, RST, frozen), 1100/1101/1102/2110 and farm
notices, time steps, NTP steps, a check's suppression, acknowledgements, mutes, and restarts of
gwbot. CI runs a bounded number of examples; ``--hypothesis-profile=long`` runs many more.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from bot.config import Config, GatewayConfig, WatchConfig
from bot.ibkr import errors as ib
from bot.ibkr import notices
from bot.ibkr.events import Connected, Disconnected, DisconnectReason, GatewayNotice
from bot.lab.wire import NOTICE_TEXTS
from bot.watch.alerts import Alert, AlertKind
from bot.watch.schedule import Window
from bot.watch.state import Phase
from bot.watch.watcher import GatewayWatcher, _Connected, _Failed
from storage import Repository
from tests.test_watch_engine import FakeClock

START = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # Wednesday 10:00 New York
# The second name is as long as a name may be: buttons and keys must not care.
NAMES = ("paper", "g" * 60)
FAILURES = (ib.GatewayRefused, ib.ApiNotReady, ib.GatewayClosedConnection, ib.ClientIdInUse, ib.HandshakeTimeout)
DROPS = (DisconnectReason.PEER_CLOSED, DisconnectReason.RESET, DisconnectReason.HEARTBEAT_TIMEOUT)
CODES = (1100, 2110, 1101, 1102, 2103, 2104, 2105, 2106, 2157, 2158)


@dataclass
class Model:
    """What the Gateway has said, as the invariants need it."""

    connected: bool = False
    link_down: int | None = None  # 1100 / 2110 heard on this connection, not answered yet
    mute_end: float | None = None  # monotonic
    acked: str | None = None  # the incident key someone took
    red: dict[str, int] = field(default_factory=dict)  # loud 🔴 per incident key
    green: dict[str, int] = field(default_factory=dict)  # 🟢 per incident key


class WatchMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.folder = Path(tempfile.mkdtemp(prefix="gwbot-model-"))
        self.clock = FakeClock(START)
        self.alerts: list[Alert] = []
        self.models = {name: Model() for name in NAMES}
        self.repo: Repository | None = None
        self.watchers: dict[str, GatewayWatcher] = {}
        self.config = Config()

    # ------------------------------------------------------------ set-up
    @initialize(window=st.booleans(), down_after=st.sampled_from([0.0, 3.0, 30.0]))
    def start(self, window: bool, down_after: float) -> None:
        # Sometimes an expected window covers the first hours, so its notes and escalations are in play.
        expected = (Window("test window", (START + timedelta(minutes=30)).time(), (START + timedelta(hours=2)).time(),
                           "UTC"),) if window else ()
        self.config = Config(
            gateways=tuple(GatewayConfig(name=n, port=4000 + i, client_id=1 + i) for i, n in enumerate(NAMES)),
            watch=WatchConfig(down_after=down_after, remind_every=600, flap_count=4, flap_window=300, flap_quiet=120,
                              farm_grace=60, grace=60, login_settle=30, login_timeout=180, relogin_reminder=3600,
                              expected=expected))
        self.repo = self.runner.run(Repository.open(self.folder / "gwbot.sqlite3"))
        self._start_watchers()

    def _start_watchers(self) -> None:
        assert self.repo is not None

        async def sink(alert: Alert) -> None:
            self.alerts.append(alert)

        self.watchers = {gw.name: GatewayWatcher(gw, self.config.watch, sink, store=self.repo.incidents,
                                                 clock=self.clock) for gw in self.config.gateways}
        for w in self.watchers.values():
            self.runner.run(w.resume())

    def teardown(self) -> None:
        try:
            for w in self.watchers.values():
                self.runner.run(w.stop())
            if self.repo is not None:
                self.runner.run(self.repo.close())
        finally:
            self.runner.close()
            shutil.rmtree(self.folder, ignore_errors=True)

    # ------------------------------------------------------------ helpers
    def _feed(self, name: str, item: object) -> None:
        self._judged(name, lambda: self.runner.run(self.watchers[name].process(item)))  # type: ignore[arg-type]

    def _act(self, name: str, act) -> None:  # type: ignore[no-untyped-def]
        """A person's act (mute, acknowledge, a check's suppression), then what it decided, as the
        watcher's processor takes it from the inbox."""
        def both() -> None:
            act()
            inbox = self.watchers[name]._inbox
            while not inbox.empty():
                self.runner.run(self.watchers[name].process(inbox.get_nowait()))
        self._judged(name, both)

    def _judged(self, name: str, act) -> None:  # type: ignore[no-untyped-def]
        """Run ``act`` and check what it sent against the model."""
        w, m = self.watchers[name], self.models[name]
        before = len(self.alerts)
        open_before = w.engine.incident
        muted = m.mute_end is not None and self.clock.mono() < m.mute_end
        flapping = w.engine.flapping
        act()
        sent = [a for a in self.alerts[before:] if a.gateway == name]
        for a in sent:
            self._sent(name, a, muted)
        closed = open_before is not None and (w.engine.incident is None or w.engine.incident.key != open_before.key)
        if closed and m.red.get(open_before.key) and not (muted or flapping or w.engine.flapping) \
                and self._unmuted_now(name):
            assert m.green.get(open_before.key) == 1, f"{name}: the 🔴'd outage {open_before.key} ended without a 🟢"

    def _unmuted_now(self, name: str) -> bool:
        m = self.models[name]
        return m.mute_end is None or self.clock.mono() >= m.mute_end

    def _sent(self, name: str, a: Alert, muted: bool) -> None:
        m = self.models[name]
        assert not (muted and not a.edit), f"{name} is muted, yet a new message went out: {a.text}"
        key = a.incident.key if a.incident is not None else None
        if a.edit:
            # An edit changes a message this Gateway sent earlier, never another's (nor a digest).
            assert any(b.message_key == a.message_key and not b.edit and b.gateway == name for b in self.alerts), \
                f"an edit of a message that never went out: {a.text}"
        elif a.kind is AlertKind.DOWN and key is not None:
            m.red[key] = m.red.get(key, 0) + 1
            assert m.red[key] == 1, f"a second loud 🔴 for one outage: {a.text}"
        elif a.kind is AlertKind.RECOVERED and key is not None:
            m.green[key] = m.green.get(key, 0) + 1
            assert m.green[key] == 1, f"a second 🟢 for one outage: {a.text}"
        if a.kind is AlertKind.REMINDER:
            assert key != m.acked, "a reminder after someone took the outage"
        for data in (f"{action}:{a.incident.ref}" for action in a.actions if a.incident is not None):
            assert len(data.encode()) <= 64, "Telegram refuses callback data over 64 bytes"

    def _notice(self, code: int) -> GatewayNotice:
        text = NOTICE_TEXTS[code]
        kind = notices.notice_kind(code, text)
        assert kind is not None
        return GatewayNotice(code=code, message=text, notice=kind, farm=notices.farm_name(code, text),
                             at=self.clock.wall())

    # -------------------------------------------------------------- rules
    names = st.sampled_from(NAMES)

    @rule(name=names)
    def connect(self, name: str) -> None:
        m = self.models[name]
        if m.connected:
            return
        m.connected = True
        event = Connected(server_version=178, accounts=("DU1",), connection_time="", at=self.clock.wall())
        self._feed(name, _Connected(event, attempts=1))

    @rule(name=names, error=st.sampled_from(FAILURES))
    def fail_to_connect(self, name: str, error: type[ib.GatewayError]) -> None:
        m = self.models[name]
        if m.connected:
            return
        m.link_down = None
        self._feed(name, _Failed(self.clock.wall(), error("simulated failure")))

    @rule(name=names, reason=st.sampled_from(DROPS))
    def drop(self, name: str, reason: DisconnectReason) -> None:
        m = self.models[name]
        if not m.connected:
            return
        m.connected, m.link_down = False, None
        self._feed(name, Disconnected(reason=reason, detail=str(reason), at=self.clock.wall()))

    @rule(name=names, code=st.sampled_from(CODES))
    def notice(self, name: str, code: int) -> None:
        """A notice on the connection that is up, or on the one being made (before its Connected)."""
        m = self.models[name]
        if code in (1100, 2110):
            m.link_down = code
        elif code in (1101, 1102) or (code in (2104, 2106, 2158) and m.link_down == 2110):
            m.link_down = None
        self._feed(name, self._notice(code))

    @rule(seconds=st.sampled_from([0.5, 2.0, 5.0, 31.0, 61.0, 130.0, 700.0, 3000.0]))
    def time_passes(self, seconds: float) -> None:
        target = self.clock.now + timedelta(seconds=seconds)
        for _ in range(10_000):
            dues = [(d, n) for n, w in self.watchers.items() if (d := w.engine.next_due()) is not None]
            due, name = min(dues) if dues else (None, "")
            if due is None or self.clock.true_time(due) > target:
                break
            self.clock.now = max(self.clock.now, self.clock.true_time(due))
            self._feed(name, None)
        else:
            raise AssertionError("a due time that never moves on")
        self.clock.now = target
        for name in self.watchers:
            self._feed(name, None)

    @rule(hours=st.sampled_from([-2.0, -0.5, 0.5, 3.0]))
    def ntp_steps(self, hours: float) -> None:
        self.clock.skew += timedelta(hours=hours)
        for name in self.watchers:
            self._feed(name, None)

    @rule(name=names, minutes=st.sampled_from([None, 2, 20]))
    def check_suppresses(self, name: str, minutes: int | None) -> None:
        until = None if minutes is None else self.clock.wall() + timedelta(minutes=minutes)
        self._act(name, lambda: self.watchers[name].suppress("reconnect check", until))

    @rule(name=names, stale=st.booleans())
    def acknowledge(self, name: str, stale: bool) -> None:
        w = self.watchers[name]
        inc = w.engine.incident
        if inc is None:
            return
        key = f"{name}@1" if stale else inc.key
        taken = False

        def act() -> None:
            nonlocal taken
            taken = w.acknowledge("alice", key)
        self._act(name, act)
        if taken:
            self.models[name].acked = inc.key
        assert not (stale and taken), "a stale button took an outage"

    @rule(name=names, minutes=st.sampled_from([None, 1, 10, 60]))
    def mute(self, name: str, minutes: int | None) -> None:
        m = self.models[name]
        until = None if minutes is None else self.clock.wall() + timedelta(minutes=minutes)
        m.mute_end = None if minutes is None else self.clock.mono() + minutes * 60
        self._act(name, lambda: self.watchers[name].mute(until))

    @rule()
    def gwbot_restarts(self) -> None:
        """gwbot stops and starts again a little later: no connection yet, memory taken up."""
        mutes = {}
        for name, w in self.watchers.items():
            mutes[name] = w.engine.muted_until
            self.runner.run(w.stop())
        self.clock.now += timedelta(seconds=5)
        self._start_watchers()
        for name, m in self.models.items():
            m.connected, m.link_down = False, None
            until = mutes[name]
            # What is stored is wall time: an NTP step since the mute moves its end with it.
            m.mute_end = None if until is None or until <= self.clock.wall() else \
                self.clock.mono() + (until - self.clock.wall()).total_seconds()

    # ---------------------------------------------------------- invariants
    @invariant()
    def never_up_while_the_gateway_says_its_link_is_down(self) -> None:
        for name, w in self.watchers.items():
            m = self.models[name]
            if not m.connected or m.link_down is not None:
                assert w.state.phase is not Phase.UP, f"{name} shown up: connected={m.connected}, " \
                                                      f"link down ({m.link_down})"
            else:
                assert w.state.phase is Phase.UP, f"{name} connected with its link not said down, yet not up"

    @invariant()
    def an_acknowledgement_holds_until_its_outage_ends(self) -> None:
        for name, w in self.watchers.items():
            inc, acked = w.engine.incident, self.models[name].acked
            if inc is not None and inc.key == acked:
                assert inc.acked_by == "alice", f"{name}: the acknowledgement was lost"

    @invariant()
    def a_mute_holds_until_it_ends(self) -> None:
        for name, w in self.watchers.items():
            m = self.models[name]
            if m.mute_end is not None and self.clock.mono() < m.mute_end - 1e-6:
                assert w.engine.muted_until is not None, f"{name}: the mute was lost"

    @invariant()
    def status_shows_the_engines_outage(self) -> None:
        for w in self.watchers.values():
            assert w.state.incident == w.engine.incident


TestWatchModel = WatchMachine.TestCase


def test_a_farm_ok_heard_as_the_debounce_runs_out_does_not_swallow_the_red():
    """Found by the long run: the farm notice's judging decided the 🔴 and dropped it, so the
    acknowledgement later edited a message nobody had been sent."""
    machine = WatchMachine()
    try:
        machine.start(window=False, down_after=3.0)
        machine.fail_to_connect(name=NAMES[0], error=ib.GatewayRefused)
        machine.clock.now += timedelta(seconds=5)
        machine.notice(name=NAMES[0], code=2104)
        assert [(a.kind, a.edit) for a in machine.alerts] == [(AlertKind.DOWN, False)]
    finally:
        machine.teardown()
