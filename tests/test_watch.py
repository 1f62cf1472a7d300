"""The watcher against the real simulated Gateway over TCP, with real ib_async and a collecting sink."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest

from bot.client_ids import ClientRole
from bot.config import Config, GatewayConfig, WatchConfig
from bot.ibkr.client import IBKRClient
from bot.ibkr.errors import Layer
from bot.lab.simulator import SimulatedGateway
from bot.watch.alerts import Alert, AlertKind
from bot.watch.schedule import Window, WindowKind
from bot.watch.state import DownCause, Phase
from bot.watch.watcher import Watch, WatchLogFilter, health_from_state
from tests.conftest import FAST

# No IBKR windows and no weekly reminder: these tests run at whatever time it is.
QUIET = {"expected": (), "relogin_reminder": 0}


class Collect:
    """An AlertSink that keeps what it is given and lets a test wait for a kind."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self._changed = asyncio.Condition()

    async def __call__(self, alert: Alert) -> None:
        async with self._changed:
            self.alerts.append(alert)
            self._changed.notify_all()

    async def wait_for(self, kind: AlertKind, timeout: float = 8.0, *, edit: bool = False) -> Alert:
        def found() -> Alert | None:
            return next((a for a in self.alerts if a.kind is kind and a.edit is edit), None)
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: found() is not None)
        return found()  # type: ignore[return-value]


def config_for(*gateways: SimulatedGateway, **watch) -> Config:
    gws = tuple(GatewayConfig(name=f"gw{i}" if i else "paper", port=g.port, client_id=1 + i, connect_timeout=1.0,
                              heartbeat_interval=1.0, heartbeat_timeout=0.5) for i, g in enumerate(gateways))
    return Config(gateways=gws, watch=WatchConfig(**(QUIET | {"down_after": 0.3} | watch)))


async def until(predicate, timeout: float = 8.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def watch_for(config: Config, sink, **kw) -> Watch:
    return Watch(config, sink, knock_interval=0.05, max_pause=0.3,
                 client_options={"probe_interval": FAST.probe_interval}, **kw)


async def test_stop_brings_down_after_debounce_and_start_brings_recovered_with_downtime(gateway):
    sink = Collect()
    async with watch_for(config_for(gateway), sink) as watch:
        await until(lambda: watch.watcher().state.phase is Phase.UP)
        state = watch.watcher().state
        assert state.server_version == 178
        health = health_from_state(config_for(gateway).gateway(), state)
        assert health.reached(Layer.API_READY) and health.error is None and health.source == "watch"
        assert [c.client_id for c in gateway.clients] == [1 + ClientRole.WATCH]
        await gateway.stop()
        down = await sink.wait_for(AlertKind.DOWN)
        assert down.loud and down.gateway == "paper"
        assert down.text.startswith("🔴 paper is DOWN — closed by the Gateway (TCP port refused since ")
        assert down.text.endswith("Layer: TCP port.")
        assert (down.at - down.incident.started_at).total_seconds() >= 0.3, "debounced"
        state = watch.watcher().state
        assert state.phase is Phase.DOWN and state.failed is Layer.TCP_PORT and state.cause is DownCause.REFUSED
        assert state.incident is not None
        health = health_from_state(config_for(gateway).gateway(), state)
        assert health.reached(Layer.TCP_PORT) is False and health.error.startswith("TCP port refused since ")
        await asyncio.sleep(0.5)
        await gateway.start()
        back = await sink.wait_for(AlertKind.RECOVERED)
        assert not back.loud
        assert back.text.startswith("🟢 paper is back after ") and "reconnected (" in back.text
        assert back.incident.duration(back.at) >= 0.8
        assert watch.watcher().state.phase is Phase.UP and watch.watcher().state.incident is None
    assert [a.kind for a in sink.alerts] == [AlertKind.DOWN, AlertKind.RECOVERED]


async def test_a_drop_shorter_than_down_after_sends_nothing(gateway):
    sink = Collect()
    async with watch_for(config_for(gateway, down_after=3.0), sink) as watch:
        await until(lambda: watch.watcher().state.phase is Phase.UP)
        await gateway.restart(down_for=0.1)
        await until(lambda: watch.watcher().state.phase is Phase.DOWN, 3)
        await until(lambda: watch.watcher().state.phase is Phase.UP)
        await asyncio.sleep(0.3)
    assert sink.alerts == []


async def test_down_from_the_start_then_back(port):
    sink = Collect()
    gw = SimulatedGateway(port=port)
    async with watch_for(config_for(gw), sink):
        down = await sink.wait_for(AlertKind.DOWN)
        assert "refused: the Gateway is not running" in down.text
        await gw.start()
        try:
            back = await sink.wait_for(AlertKind.RECOVERED)
            assert "reconnected (" in back.text
        finally:
            await gw.stop()


async def test_link_lost_inside_an_expected_window_is_one_quiet_note_and_no_down(gateway):
    window = window_around_now(WindowKind.RESET, "nightly reset")
    sink = Collect()
    async with watch_for(config_for(gateway, expected=(window,)), sink) as watch:
        await until(lambda: watch.watcher().state.phase is Phase.UP)
        await gateway.send_notice(1100)
        note = await sink.wait_for(AlertKind.EXPECTED)
        assert not note.loud and note.text.startswith("🟡 paper: IB link lost (1100) inside the nightly reset window")
        assert watch.watcher().state.failed is Layer.IB_LINK
        await gateway.send_notice(1102)
        edit = await sink.wait_for(AlertKind.EXPECTED, edit=True)
        assert "IB link restored, data kept (1102)" in edit.text
        await asyncio.sleep(0.5)
    assert [(a.kind, a.edit) for a in sink.alerts] == [(AlertKind.EXPECTED, False), (AlertKind.EXPECTED, True)]


async def test_link_lost_outside_a_window_is_down_and_1101_says_resubscribe(gateway):
    sink = Collect()
    async with watch_for(config_for(gateway), sink) as watch:
        await until(lambda: watch.watcher().state.phase is Phase.UP)
        await gateway.send_notice(1100)
        down = await sink.wait_for(AlertKind.DOWN)
        assert "IB link lost (1100)" in down.text and "Layer: link to IB servers." in down.text
        await gateway.send_notice(1101)
        back = await sink.wait_for(AlertKind.RECOVERED)
        assert "subscriptions lost — resubscribe (1101)" in back.text


async def test_a_frozen_gateway_is_down_as_frozen(gateway):
    sink = Collect()
    async with watch_for(config_for(gateway), sink) as watch:
        await until(lambda: watch.watcher().state.phase is Phase.UP)
        gateway.freeze()
        down = await sink.wait_for(AlertKind.DOWN)
        assert down.text.startswith("🔴 paper is DOWN — frozen (no heartbeat answer)")
        gateway.unfreeze()
        await sink.wait_for(AlertKind.RECOVERED)


async def test_a_checks_deliberate_stop_sends_nothing_and_its_client_never_trips_the_watch(gateway):
    sink = Collect()
    async with watch_for(config_for(gateway), sink) as watch:
        await until(lambda: watch.watcher().state.phase is Phase.UP)
        check_client = IBKRClient("127.0.0.1", gateway.port, 1, FAST)  # a check's own id
        await check_client.connect()
        await check_client.disconnect()
        watch.suppress("paper", "reconnect check", datetime.now(UTC) + timedelta(seconds=30))
        await gateway.stop()
        await until(lambda: watch.watcher().state.phase is Phase.DOWN)
        await asyncio.sleep(0.6)
        await gateway.start()
        await until(lambda: watch.watcher().state.phase is Phase.UP)
        watch.suppress("paper", "reconnect check", None)
        await asyncio.sleep(0.5)
    assert sink.alerts == []


async def test_the_watchs_log_records_are_told_apart_from_a_checks(gateway):
    seen: list[logging.LogRecord] = []
    kept: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def __init__(self, into: list[logging.LogRecord], *filters: logging.Filter) -> None:
            super().__init__(logging.DEBUG)
            self.into = into
            for f in filters:
                self.addFilter(f)

        def emit(self, record: logging.LogRecord) -> None:
            self.into.append(record)

    handlers = [Keep(seen), Keep(kept, WatchLogFilter())]
    loggers = [logging.getLogger(n) for n in ("bot", "ib_async")]
    for lg in loggers:
        for h in handlers:
            lg.addHandler(h)
    try:
        async with watch_for(config_for(gateway), Collect()) as watch:
            await until(lambda: watch.watcher().state.phase is Phase.UP)
            await gateway.stop()
            await until(lambda: watch.watcher().state.phase is Phase.DOWN)
            await gateway.start()
            await until(lambda: watch.watcher().state.phase is Phase.UP)
            logging.getLogger("bot.checks").error("a check's own error")
    finally:
        for lg in loggers:
            for h in handlers:
                lg.removeHandler(h)
    assert any(r.name.startswith("bot.ibkr") for r in seen), "the watch's client did log"
    # The simulated Gateway's own lines are the test's, not the watch's.
    assert [r.getMessage() for r in kept if r.name != "bot.lab.simulator"] == ["a check's own error"]


async def test_one_gateways_stuck_sink_never_delays_anothers_alerts():
    async with SimulatedGateway(port=0) as a, SimulatedGateway(port=0) as b:
        got = Collect()

        async def sink(alert: Alert) -> None:
            if alert.gateway == "paper":
                await asyncio.Event().wait()  # this Gateway's alerts hang forever
            await got(alert)

        async with watch_for(config_for(a, b), sink) as watch:
            await until(lambda: all(w.state.phase is Phase.UP for w in watch.watchers.values()))
            await a.stop()
            await asyncio.sleep(0.5)
            await b.stop()
            down = await got.wait_for(AlertKind.DOWN)
            assert down.gateway == "gw1" and down.text.startswith("🔴 gw1 is DOWN")


@pytest.mark.parametrize("base", [1, 2**31 - 1 - max(ClientRole)])  # config refuses higher ids
def test_watch_client_id_is_its_own_and_valid(base):
    ids = {base + role for role in ClientRole}
    assert len(ids) == len(ClientRole) and all(0 <= i <= 2**31 - 1 for i in ids)


async def test_a_restart_back_at_its_login_screen_says_so_and_the_ack_edits_both(gateway):
    sink = Collect()
    async with watch_for(config_for(gateway, login_timeout=180, login_settle=0.5), sink) as watch:
        await until(lambda: watch.watcher().state.phase is Phase.UP)
        await gateway.stop()
        down = await sink.wait_for(AlertKind.DOWN)
        gateway.set_ready(False)  # back, but waiting at its login
        await gateway.start()
        need = await sink.wait_for(AlertKind.LOGIN_WAIT)
        assert need.loud and need.text.startswith("🔐 paper waits at its login") and "2FA" not in need.text
        state = watch.watcher().state
        assert state.failed is Layer.API_READY and state.cause is DownCause.NOT_LOGGED_IN
        assert not watch.acknowledge("paper@1", "bob"), "a stale button"
        assert watch.acknowledge(down.incident.key, "alice")
        edited = await sink.wait_for(AlertKind.DOWN, edit=True)
        assert "✋ Taken by alice" in edited.text and edited.message_key == down.message_key
        await sink.wait_for(AlertKind.LOGIN_WAIT, edit=True)
        gateway.set_ready(True)
        back = await sink.wait_for(AlertKind.RECOVERED)
        assert "alice had taken it" in back.text


async def test_2110_is_a_link_loss_and_farms_coming_back_end_it(gateway):
    sink = Collect()
    async with watch_for(config_for(gateway), sink) as watch:
        await until(lambda: watch.watcher().state.phase is Phase.UP)
        await gateway.send_notice(2110, "Connectivity between Trader Workstation and server is broken. "
                                        "It will be restored automatically.")
        down = await sink.wait_for(AlertKind.DOWN)
        assert "IB link lost (2110)" in down.text
        await gateway.send_notice(2104)
        back = await sink.wait_for(AlertKind.RECOVERED)
        assert back.text.endswith("— IB link restored.")


async def test_a_failing_sink_never_ends_the_watch(gateway):
    got = Collect()

    async def sink(alert: Alert) -> None:
        await got(alert)
        raise RuntimeError("outbox unavailable")

    async with watch_for(config_for(gateway), sink) as watch:
        await until(lambda: watch.watcher().state.phase is Phase.UP)
        await gateway.stop()
        await got.wait_for(AlertKind.DOWN)
        await gateway.start()
        await got.wait_for(AlertKind.RECOVERED)


def window_around_now(kind: WindowKind, name: str) -> Window:
    now = datetime.now(UTC)
    return Window(name, (now - timedelta(hours=1)).time().replace(second=0, microsecond=0),
                  (now + timedelta(hours=1)).time().replace(second=0, microsecond=0), "UTC", kind=kind)


async def test_a_restart_inside_the_auto_restart_window_is_expected(gateway):
    sink = Collect()
    async with watch_for(config_for(gateway, expected=(window_around_now(WindowKind.RESTART, "Gateway auto-restart"),)),
                         sink) as watch:
        await until(lambda: watch.watcher().state.phase is Phase.UP)
        await gateway.stop()
        note = await sink.wait_for(AlertKind.EXPECTED)
        assert note.text.startswith("🟡 paper: closed by the Gateway inside the Gateway auto-restart window")
        await gateway.start()
        back = await sink.wait_for(AlertKind.EXPECTED, edit=True)
        assert "Back after" in back.text and "reconnected" in back.text
    assert not any(a.loud for a in sink.alerts)


async def test_a_farm_broken_past_its_grace_is_a_quiet_warning(gateway):
    sink = Collect()
    async with watch_for(config_for(gateway, farm_grace=0.3), sink) as watch:
        await until(lambda: watch.watcher().state.phase is Phase.UP and watch.watcher().state.farms)
        await gateway.send_notice(2103)
        warning = await sink.wait_for(AlertKind.FARM_WARNING)
        assert not warning.loud and warning.text.startswith("🟡 paper: data farm usfarm broken for ")
        state = watch.watcher().state
        assert state.phase is Phase.UP and state.failed is Layer.DATA_FARMS and state.link_ok
        await gateway.send_notice(2104)
        ok = await sink.wait_for(AlertKind.FARM_WARNING, edit=True)
        assert "OK again since" in ok.text and watch.watcher().state.failed is None


async def test_a_gateway_back_at_its_login_is_joined_promptly_once_its_api_is_ready(gateway):
    # The checklist's connect timeout (10 s) and the watcher's own backoff (up to 5 s): neither
    # may hold a watcher that keeps finding the Gateway there but still logging in.
    ready_wait = 0.25
    config = Config(gateways=(GatewayConfig(name="paper", port=gateway.port, heartbeat_interval=1.0,
                                            heartbeat_timeout=0.5),),
                    watch=WatchConfig(**(QUIET | {"down_after": 0.3})))
    async with Watch(config, Collect(), knock_interval=0.05,
                     client_options={"probe_interval": 0.05, "ready_wait": ready_wait}) as watch:
        state = lambda: watch.watcher().state  # noqa: E731
        await until(lambda: state().phase is Phase.UP)
        await gateway.begin_restart(0.2, ready_after=1.5)
        await until(lambda: state().phase is Phase.DOWN and not gateway.ready)  # back, logging in
        await until(lambda: gateway.ready, 5)
        ready_at = asyncio.get_running_loop().time()
        await until(lambda: state().phase is Phase.UP, 5)
        late = asyncio.get_running_loop().time() - ready_at
    assert late < ready_wait + 0.5, f"joined {late:.2f} s after the API was ready"
