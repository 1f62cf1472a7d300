"""IBKRClient against the simulated Gateway over real loopback sockets, with the real ib_async."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import replace

import pytest
from tenacity import stop_after_attempt, stop_after_delay, wait_fixed

from bot.ibkr.client import ConnectionState, IBKRClient, ReconnectPolicy, probe_port
from bot.ibkr.errors import (
    ApiNotReady,
    ClientIdInUse,
    ConnectionRejected,
    GatewayRefused,
    HandshakeTimeout,
    HostUnresolvable,
    LiveAccountRefused,
    NotAnApiPort,
    NotConnected,
)
from bot.ibkr.events import (
    ClientEvent,
    Connected,
    Disconnected,
    DisconnectReason,
    GatewayNotice,
    NoticeKind,
    Reconnected,
    ReconnectFailedAttempt,
    ReconnectGaveUp,
    Reconnecting,
    next_event,
)
from bot.lab.simulator import Reject, SimulatedGateway
from tests.conftest import FAST, free_port


def client_for(gw: SimulatedGateway, client_id: int = 1, **options) -> IBKRClient:
    return IBKRClient("127.0.0.1", gw.port, client_id, replace(FAST, **options))


def every(delay: float, attempts: int = 5) -> ReconnectPolicy:
    """Reconnect ``delay`` s after a spent attempt, at most ``attempts`` of them, never out of time."""
    return ReconnectPolicy(stop_after_attempt(attempts), wait_fixed(delay))


async def test_connect_ping_and_graceful_disconnect(gateway):
    client = client_for(gateway)
    events: list[ClientEvent] = []
    client.events.subscribe(events.append)
    await client.connect()
    assert await client.is_connected()
    up = next(e for e in events if isinstance(e, Connected))
    assert up.server_version == 178
    assert up.accounts == ("DUO779750",)
    assert up.connection_time.endswith("UTC")
    rtt = await client.ping()
    assert 0 < rtt < 0.5
    await client.disconnect()
    assert not await client.is_connected()
    kinds = [type(e) for e in events if not isinstance(e, GatewayNotice)]
    assert Connected in kinds
    assert [e.reason for e in events if isinstance(e, Disconnected)] == [DisconnectReason.LOCAL]
    await asyncio.sleep(0.3)
    assert not any(isinstance(e, Reconnecting) for e in events), "no auto-reconnect after a local disconnect"


async def test_farm_notices_arrive_as_typed_events(gateway):
    client = client_for(gateway)
    async with client.events.stream() as q:
        await client.connect()
        notices = [await next_event(q, GatewayNotice, 2) for _ in range(3)]
    assert {n.code for n in notices} == {2104, 2106, 2158}
    assert all(n.notice is NoticeKind.FARM_OK for n in notices)
    assert {n.farm for n in notices} == {"usfarm", "ushmds", "secdefnj"}
    await client.disconnect()


async def test_link_lost_and_restored_notices(gateway):
    client = client_for(gateway)
    await client.connect()
    async with client.events.stream() as q:
        await gateway.send_notice(1100)
        lost = await next_event(q, GatewayNotice, 2)
        assert lost.notice is NoticeKind.LINK_LOST and lost.notice.is_link_down
        assert await client.is_connected(), "1100 keeps the socket up"
        await gateway.send_notice(1102)
        restored = await next_event(q, GatewayNotice, 2)
        assert restored.notice is NoticeKind.LINK_RESTORED and restored.notice.is_link_back
    await client.ping()  # ib_async's reqAccountSummary after 1102 must not wedge the client
    await client.disconnect()


async def test_stop_is_detected_within_a_second_as_peer_closed(gateway):
    client = client_for(gateway, reconnect=None)
    await client.connect()
    async with client.events.stream() as q:
        stopped = time.monotonic()
        await gateway.stop()
        event = await next_event(q, Disconnected, 1.0)
    assert event.reason is DisconnectReason.PEER_CLOSED
    assert event.mono - stopped < 1.0
    assert not await client.is_connected()
    await client.disconnect()


async def test_reset_is_reported_as_reset(gateway):
    client = client_for(gateway, reconnect=None)
    await client.connect()
    async with client.events.stream() as q:
        await gateway.drop_clients(reset=True)
        event = await next_event(q, Disconnected, 1.0)
    assert event.reason is DisconnectReason.RESET
    await client.disconnect()


async def test_restart_reconnects_and_refused_knocks_spend_no_attempt(gateway):
    # Down 10x longer than delay x attempts: the old client gave up; knocking costs nothing now.
    client = client_for(gateway, reconnect=every(0.1, attempts=2))
    await client.connect()
    failed: list[ReconnectFailedAttempt] = []
    client.events.subscribe(lambda e: failed.append(e) if isinstance(e, ReconnectFailedAttempt) else None)
    async with client.events.stream() as q:
        await gateway.stop()
        await next_event(q, Disconnected, 1)
        await asyncio.sleep(2.0)
        back = time.monotonic()
        await gateway.start()
        done = await next_event(q, (Reconnected, ReconnectGaveUp), 5)
    assert isinstance(done, Reconnected)
    assert done.attempts == 1 and not failed
    assert done.mono - back < 1.0, "reconnects as soon as the port is back"
    assert await client.is_connected()
    await client.ping()
    await client.disconnect()


async def test_reconnect_gives_up_only_when_the_time_budget_runs_out(gateway):
    policy = ReconnectPolicy(stop_after_attempt(1) | stop_after_delay(1.0), wait_fixed(0.1))
    client = client_for(gateway, reconnect=policy)
    await client.connect()
    async with client.events.stream() as q:
        await gateway.stop()
        gave_up = await next_event(q, ReconnectGaveUp, 5)
    assert gave_up.attempts == 0
    assert 1.0 <= gave_up.downtime < 3.0
    assert "port stayed closed" in gave_up.last_error and "give_up_after" in gave_up.last_error
    assert client.state is ConnectionState.DISCONNECTED
    await client.disconnect()


async def test_attempts_are_spent_when_the_gateway_accepts_and_the_api_fails(gateway):
    client = client_for(gateway, reconnect=every(0.1, attempts=3))
    await client.connect()
    gateway.set_reject(Reject.RST)
    async with client.events.stream() as q:
        await gateway.drop_clients()
        gave_up = await next_event(q, ReconnectGaveUp, 5)
    assert gave_up.attempts == 3
    assert "before the API handshake" in gave_up.last_error
    await client.disconnect()


async def test_disconnect_cancels_a_running_reconnect(gateway):
    client = client_for(gateway, reconnect=every(5))
    await client.connect()
    async with client.events.stream() as q:
        await gateway.stop()
        await next_event(q, Disconnected, 1)
        await client.disconnect()
        await gateway.start()
        with pytest.raises(TimeoutError):
            await next_event(q, (Reconnecting, Reconnected), 0.5)
    assert client.state is ConnectionState.DISCONNECTED


async def test_frozen_gateway_is_caught_by_the_heartbeat(gateway):
    client = client_for(gateway, reconnect=None)
    await client.connect()
    async with client.events.stream() as q:
        gateway.freeze()
        event = await next_event(q, Disconnected, 5)
    gateway.unfreeze()
    assert event.reason is DisconnectReason.HEARTBEAT_TIMEOUT
    with pytest.raises(NotConnected):
        await client.ping()
    await client.disconnect()


async def test_frozen_then_thawed_gateway_is_reconnected(gateway):
    client = client_for(gateway, reconnect=every(0.3))
    await client.connect()
    async with client.events.stream() as q:
        gateway.freeze()
        await next_event(q, Disconnected, 5)
        gateway.unfreeze()
        await next_event(q, Reconnected, 10)
    assert await client.is_connected()
    await client.disconnect()


async def test_client_id_in_use_fails_fast(gateway):
    first = client_for(gateway, client_id=7)
    await first.connect()
    second = client_for(gateway, client_id=7, connect_timeout=5)
    start = time.monotonic()
    with pytest.raises(ClientIdInUse, match="326"):
        await second.connect()
    assert time.monotonic() - start < 1.0, "not the 5 s timeout ib_async would wait"
    assert await first.is_connected()
    await first.disconnect()


async def test_refused_port():
    client = IBKRClient("127.0.0.1", free_port(), 1, FAST)
    with pytest.raises(GatewayRefused) as err:
        await client.connect()
    assert "not running" in str(err.value)
    assert any("Start IBKR Gateway" in h for h in err.value.hint_lines)


async def test_unresolvable_host():
    with pytest.raises(HostUnresolvable):
        await IBKRClient("gateway.invalid", 4002, 1, FAST).connect()


@pytest.mark.parametrize("payload", [b"HTTP/1.1 400 Bad Request\r\n\r\n", b"\x00\x00\x00\x05hello"])
async def test_non_api_server_fails_fast(payload):
    async def handler(reader, writer):
        writer.write(payload)
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        start = time.monotonic()
        with pytest.raises(NotAnApiPort):
            await IBKRClient("127.0.0.1", port, 1, replace(FAST, connect_timeout=3)).connect()
        assert time.monotonic() - start < 1.0


async def test_silent_port_times_out_within_the_timeout():
    async def handler(reader, writer):
        await reader.read()
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        start = time.monotonic()
        with pytest.raises(HandshakeTimeout):
            await IBKRClient("127.0.0.1", port, 1, replace(FAST, connect_timeout=1)).connect()
        assert time.monotonic() - start < 2.0


async def test_not_ready_gateway_names_the_cause(gateway):
    gateway.set_ready(False)
    with pytest.raises(ApiNotReady, match="not logged in"):
        await client_for(gateway, connect_timeout=1).connect()


async def test_paper_guard_refuses_live_accounts_unless_allowed():
    async with SimulatedGateway(port=0, accounts=("U1234567",)) as gw:
        with pytest.raises(LiveAccountRefused, match="U1234567"):
            await client_for(gw).connect()
        allowed = client_for(gw, allow_live=True)
        await allowed.connect()
        assert allowed.ib is not None and allowed.ib.managedAccounts() == ["U1234567"]
        await allowed.disconnect()


async def test_other_coroutines_keep_running_during_connect_and_reconnect(gateway):
    """One loop: a ticker must never stall while the client connects, waits or reconnects."""
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    client = client_for(gateway, reconnect=every(0.2))
    await client.connect()
    async with client.events.stream() as q:
        await gateway.restart(down_for=0.5)
        await next_event(q, Reconnected, 5)
    await client.disconnect()
    tick.cancel()
    assert len(gaps) > 20
    assert max(gaps) < 0.1, f"loop stalled for {max(gaps):.3f} s"


async def test_a_gateway_still_logging_in_is_retried_at_once_and_joined_when_ready(gateway):
    # The checklist's settings: each failed try used to cost the 10 s delay on top of the timeout.
    client = client_for(gateway, reconnect=every(10), connect_timeout=10)
    await client.connect()
    failed: list[ReconnectFailedAttempt] = []
    client.events.subscribe(lambda e: failed.append(e) if isinstance(e, ReconnectFailedAttempt) else None)
    async with client.events.stream() as q:
        await gateway.begin_restart(0.5, ready_after=2.0)
        ready_at = time.monotonic() + 2.5
        done = await next_event(q, (Reconnected, ReconnectGaveUp), 10)
    assert isinstance(done, Reconnected), done
    assert done.mono - ready_at < 1.5 + 0.5, "joined promptly once the API is ready"
    assert failed and all(f.gateway_starting for f in failed)
    assert "not logged in" in failed[0].error
    assert done.attempts == 1, "a Gateway still starting spends no attempt"
    await client.disconnect()


@pytest.mark.parametrize("how", [Reject.FIN, Reject.RST])
async def test_close_before_the_handshake_is_a_typed_rejection_at_once(gateway, how):
    gateway.set_reject(how)
    start = time.monotonic()
    with pytest.raises(ConnectionRejected) as err:
        await client_for(gateway, connect_timeout=10).connect()
    assert time.monotonic() - start < 1.0  # bench: `close-before-handshake -> typed error`
    text = str(err.value)
    assert "before the API handshake" in text and "Trusted IPs" in text and "localhost only" in text
    assert not any("port" in h.lower() and "4002" in h for h in err.value.hint_lines), "no wrong-port hints"


async def test_every_resolved_address_is_tried(gateway, monkeypatch):
    # `localhost` -> ::1 first while the Gateway listens on 127.0.0.1 only (/etc/hosts here maps
    # localhost to 127.0.0.1 alone, so the resolver's answer is staged; the connect is real).
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def two_addresses(host, port, **kw):
        if host != "gateway.test":
            return await real(host, port, **kw)
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(loop, "getaddrinfo", two_addresses)
    assert await probe_port("gateway.test", gateway.port, 1.0) == ("127.0.0.1", gateway.port)
    client = IBKRClient("gateway.test", gateway.port, 1, FAST)
    await client.connect()
    assert await client.is_connected()
    await client.disconnect()
    with pytest.raises(GatewayRefused):
        await probe_port("gateway.test", free_port(), 1.0)


async def test_read_only_api_and_hung_sync_requests_do_not_fail_the_connection(gateway):
    gateway.set_readonly(True)
    gateway.set_hang([61, 5, 99, 7, 6, 76])  # positions, orders, executions, account updates
    client = client_for(gateway, connect_timeout=5)
    start = time.monotonic()
    await client.connect()
    assert time.monotonic() - start < 2.0, "waits only for accounts and the next order id"
    assert await client.is_connected()
    await client.ping()
    await client.disconnect()


async def test_real_notice_texts_are_understood():
    from bot.ibkr import notices
    from bot.lab.wire import NOTICE_TEXTS

    def kind(code):
        return notices.notice_kind(code, NOTICE_TEXTS[code])

    assert notices.farm_name(2107, NOTICE_TEXTS[2107]) == "ushmds"
    assert notices.farm_name(2108, NOTICE_TEXTS[2108]) == "usfarm"
    assert notices.farm_name(2119, NOTICE_TEXTS[2119]) == "usfarm"
    assert notices.farm_name(2104, NOTICE_TEXTS[2104]) == "usfarm"
    assert kind(2119) is NoticeKind.FARM_CONNECTING and kind(2108) is NoticeKind.FARM_INACTIVE
    assert kind(2110) is NoticeKind.SERVER_BROKEN and kind(2110).is_link_down
    assert "subscriptions lost, resubscribe" in notices.explain(1101, NOTICE_TEXTS[1101])
    assert "back — data kept" in notices.explain(1102, NOTICE_TEXTS[1102])
    read_only = "Error validating request:-'bY' : cause - The API interface is currently in Read-Only mode."
    assert notices.notice_kind(321, read_only) is NoticeKind.READ_ONLY
    assert "Read-Only" in notices.explain(321, read_only)
    assert notices.notice_kind(321, "Error validating request: missing field") is None


async def test_notices_arrive_with_code_meaning_and_farm(gateway):
    client = client_for(gateway)
    await client.connect()
    async with client.events.stream() as q:
        for code in (2110, 2107, 1101):
            await gateway.send_notice(code)
        got = [await next_event(q, GatewayNotice, 2) for _ in range(3)]
    assert [(n.code, n.notice) for n in got] == [
        (2110, NoticeKind.SERVER_BROKEN), (2107, NoticeKind.FARM_INACTIVE), (1101, NoticeKind.LINK_RESTORED_DATA_LOST)]
    assert got[1].farm == "ushmds" and "subscriptions lost" in got[2].meaning
    await client.disconnect()


def test_config_reaches_the_client_typed_with_its_role_id_and_policy():
    from bot.client_ids import ClientRole
    from bot.config import GatewayConfig

    gw = GatewayConfig(client_id=7, connect_timeout=3, allow_live=True, max_reconnect_attempts=0, reconnect_delay=2)
    client = IBKRClient.from_config(gw, ClientRole.STATUS)
    assert (client.client_id, client.options.connect_timeout, client.options.allow_live) == (807, 3, True)
    policy = client.options.reconnect
    assert policy is not None and policy.max_attempts == 1  # 0 configured: still the one try
    assert policy.wait(None) == 2 and IBKRClient.from_config(gw, reconnect=None).options.reconnect is None
    seed = IBKRClient("127.0.0.1", 4002, 1).options  # the seed scripts' form: the checklist's values
    assert (seed.connect_timeout, seed.reconnect.max_attempts, seed.reconnect.wait(None)) == (10, 5, 10)


async def test_status_probe_reports_an_unanswered_heartbeat_instead_of_raising(gateway):
    """/status's own short connection: a Gateway that connects but leaves reqCurrentTime unanswered
    is a Health with the failed layer, not an exception that reaches the chat as 'Sorry, that failed'."""
    from bot.config import GatewayConfig
    from bot.health import probe

    gateway.set_hang([49])  # reqCurrentTime: the heartbeat goes unanswered
    gw = GatewayConfig(host="127.0.0.1", port=gateway.port, heartbeat_timeout=0.5)
    health = await asyncio.wait_for(probe(gw), 10)
    assert health.error is not None and health.failed_layer is not None, health
    assert health.server_version is None


async def test_status_probe_counts_a_farm_still_connecting_as_not_ok(gateway):
    """2119 'Market data farm is connecting': the farm does not serve yet (the connect check judges
    it so too), so /status must not show the data farms layer as reached."""
    from bot.config import GatewayConfig
    from bot.health import probe

    gateway.set_connect_notices([2106, 2119])
    health = await asyncio.wait_for(probe(GatewayConfig(host="127.0.0.1", port=gateway.port)), 10)
    assert health.error is None and health.server_version == 178, health
    assert health.farms_ok is False, health


async def test_the_time_budget_bounds_reconnecting_to_a_gateway_stuck_at_its_login(gateway):
    # It answers the handshake and never gets ready: its tries spend no attempt, but time runs.
    budget, ready_wait = 1.0, 0.2
    policy = ReconnectPolicy(stop_after_attempt(5) | stop_after_delay(budget), wait_fixed(0.1))
    client = client_for(gateway, reconnect=policy, ready_wait=ready_wait)
    await client.connect()
    async with client.events.stream() as q:
        gateway.set_ready(False)
        await gateway.drop_clients()
        gave_up = await next_event(q, ReconnectGaveUp, budget + 3)
    assert gave_up.attempts == 0
    assert budget <= gave_up.downtime < budget + ready_wait + 0.3, "within one try of the budget"
    assert "not logged in" in gave_up.last_error
    assert client.state is ConnectionState.DISCONNECTED
    await client.disconnect()


async def test_a_slow_link_reconnects_though_accounts_come_later_than_the_ready_wait(gateway):
    # Every message takes 0.3 s: the accounts come 0.3 s after the handshake's answer, later than
    # the 0.2 s a retry waits on a fast link (the first connect() has no such limit).
    client = client_for(gateway, reconnect=every(0.1), ready_wait=0.2)
    gateway.set_latency(0.3)
    await client.connect()
    failed: list[ReconnectFailedAttempt] = []
    client.events.subscribe(lambda e: failed.append(e) if isinstance(e, ReconnectFailedAttempt) else None)
    async with client.events.stream() as q:
        await gateway.drop_clients()
        done = await next_event(q, (Reconnected, ReconnectGaveUp), 4)
    assert isinstance(done, Reconnected), done
    assert not failed, "the first try waits as long as the link needs"
    assert await client.is_connected()
    await client.disconnect()
