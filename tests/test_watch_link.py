"""The IB link after a connect: unknown until the Gateway says, and never "up" while its last word
is "lost". The real watcher against the real simulated Gateway in its nightly reset."""

from __future__ import annotations

from bot.ibkr.errors import Layer
from bot.watch.alerts import AlertKind
from bot.watch.state import DownCause, Phase
from tests.test_watch import Collect, config_for, until, watch_for


async def test_connecting_during_a_lost_reset_is_down_not_green_and_1101_brings_it_back(gateway):
    await gateway.begin_reset(3.0, lost=True)  # 1100 and broken farms come with every connection
    sink = Collect()
    async with watch_for(config_for(gateway), sink) as watch:
        red = await sink.wait_for(AlertKind.DOWN)
        assert red.text.startswith("🔴 paper is DOWN — IB link lost (1100)"), red.text
        state = watch.watcher().state
        assert state.phase is Phase.DOWN and state.failed is Layer.IB_LINK and state.cause is DownCause.IB_LINK
        assert state.accounts, "connected: the socket and the API are there, the link to IB is not"
        assert not any(a.kind is AlertKind.RECOVERED for a in sink.alerts), "no 🟢 on the connection itself"
        green = await sink.wait_for(AlertKind.RECOVERED)
        assert "IB link restored, subscriptions lost — resubscribe (1101)" in green.text
        assert watch.watcher().state.phase is Phase.UP and watch.watcher().state.link_ok


async def test_a_socket_drop_during_the_reset_does_not_close_the_link_outage(gateway):
    sink = Collect()
    async with watch_for(config_for(gateway), sink) as watch:
        watcher = watch.watcher()
        await until(lambda: watcher.state.phase is Phase.UP)
        await gateway.begin_reset(4.0, lost=False)
        red = await sink.wait_for(AlertKind.DOWN)
        assert "IB link lost (1100)" in red.text
        await gateway.drop_clients()  # the socket goes too; the next connection hears 1100 again
        await until(lambda: watcher.client.state.value == "connected" and watcher.state.accounts != ())
        await until(lambda: watcher.state.cause is DownCause.IB_LINK)
        assert watcher.state.phase is Phase.DOWN, "reconnected, and the Gateway says its link is still lost"
        assert not any(a.kind is AlertKind.RECOVERED for a in sink.alerts)
        green = await sink.wait_for(AlertKind.RECOVERED)
        assert "IB link restored, data kept (1102)" in green.text
        assert [a.kind for a in sink.alerts if not a.edit].count(AlertKind.DOWN) == 1, "one outage, one 🔴"


async def test_after_a_plain_connect_the_link_is_ok_only_once_the_gateway_says_so(gateway):
    gateway.set_connect_notices(())  # a Gateway that says nothing about its farms at connect
    sink = Collect()
    async with watch_for(config_for(gateway), sink) as watch:
        watcher = watch.watcher()
        await until(lambda: watcher.state.phase is Phase.UP)
        assert watcher.state.link_ok is None, "unknown: nothing was said"
        await gateway.send_notice(2104, "Market data farm connection is OK:usfarm")
        await until(lambda: watcher.state.link_ok is True)
