"""The simulated Gateway on the wire: raw sockets, and the real ib_async client."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import pytest
from ib_async import IB

from bot.lab.simctl import COMMANDS, ControlServer, control, send_control
from bot.lab.simulator import Reject
from bot.lab.wire import NOTICE_TEXTS, frame, read_frame


async def until(condition, timeout: float = 5.0) -> None:
    """Poll ``condition`` until true (background timers of the simulator run meanwhile)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def notices(ib: IB) -> list[tuple[int, int, str]]:
    """errorEvent as a list, subscribed before connecting (notices arrive during connectAsync)."""
    seen: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda req_id, code, text, contract: seen.append((req_id, code, text))
    return seen


async def raw_handshake(port: int, versions: bytes, *, split: bool = False):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    hello = b"API\0" + struct.pack(">I", len(versions)) + versions
    if split:  # byte by byte: the server must reassemble frames
        for i in range(len(hello)):
            writer.write(hello[i:i + 1])
            await writer.drain()
    else:
        writer.write(hello)
    return reader, writer


async def test_version_negotiation_for_old_and_new_clients(gateway):
    reader, writer = await raw_handshake(gateway.port, b"v100..157")
    version, conn_time = await asyncio.wait_for(read_frame(reader), 2)
    assert version == "157" and conn_time.endswith("UTC")
    writer.close()
    reader, writer = await raw_handshake(gateway.port, b"v157..190 +PACEAPI", split=True)
    assert (await asyncio.wait_for(read_frame(reader), 2))[0] == "178"
    writer.close()


async def test_too_new_a_client_is_refused(gateway):
    reader, writer = await raw_handshake(gateway.port, b"v190..200")
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()


async def test_merged_frames_and_start_api_over_raw_socket(gateway):
    reader, writer = await raw_handshake(gateway.port, b"v157..178")
    await read_frame(reader)
    writer.write(frame(71, 2, 5, "") + frame(49, 1))  # startApi and reqCurrentTime in one segment
    got = [await asyncio.wait_for(read_frame(reader), 2) for _ in range(6)]
    ids = [f[0] for f in got]
    assert ids[:2] == ["15", "9"] and ids.count("4") == 3 and "49" in ids
    assert gateway.clients[0].client_id == 5 and gateway.clients[0].ready
    writer.close()


async def test_unknown_requests_are_ignored_not_fatal(gateway):
    ib = IB()
    await ib.connectAsync("127.0.0.1", gateway.port, 3)
    ib.client.send(12345, 1, "whatever")
    assert await asyncio.wait_for(ib.reqCurrentTimeAsync(), 2)
    ib.disconnect()


async def test_latency_is_added_to_every_answer(gateway):
    ib = IB()
    await ib.connectAsync("127.0.0.1", gateway.port, 3)
    gateway.set_latency(0.2)
    start = time.monotonic()
    await asyncio.wait_for(ib.reqCurrentTimeAsync(), 2)
    assert time.monotonic() - start >= 0.2
    ib.disconnect()


async def test_garbage_leaves_ib_async_deaf(gateway):
    ib = IB()
    await ib.connectAsync("127.0.0.1", gateway.port, 3)
    await gateway.send_garbage()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ib.reqCurrentTimeAsync(), 1)
    ib.disconnect()


async def test_restart_keeps_the_port_and_wait_for_clients(gateway):
    port = gateway.port
    await gateway.restart(down_for=0.1)
    assert gateway.port == port and gateway.running
    ib = IB()
    await ib.connectAsync("127.0.0.1", port, 4)
    await gateway.wait_for_clients(1, timeout=2)
    ib.disconnect()
    await gateway.wait_for_clients(0, timeout=2, ready=False)


async def test_stopped_gateway_refuses_connections(gateway):
    await gateway.stop()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", gateway.port)


async def test_control_port_round_trip(gateway):
    ctl = ControlServer(gateway, port=0)
    await ctl.start()
    try:
        assert (await send_control("127.0.0.1", ctl.port, "status")).startswith("OK running")
        assert await send_control("127.0.0.1", ctl.port, "STOP") == "OK Shutting down: STOP command"  # IBC's
        assert not gateway.running
        assert await send_control("127.0.0.1", ctl.port, "restart 0.1") == "OK restart: port closed for 0.1 s"
        await until(lambda: gateway.running)
        assert await send_control("127.0.0.1", ctl.port, "READY off") == "OK ready" and not gateway.ready
        assert (await send_control("127.0.0.1", ctl.port, "LATENCY x")).startswith("ERROR latency: SECONDS must be")
        assert await send_control("127.0.0.1", ctl.port, "DANCE") == "ERROR Command invalid"  # IBC's words
    finally:
        await ctl.stop()


# ------------------------------------------------------------- restarts and readiness
async def test_restart_ready_after_accepts_answers_handshake_but_api_not_ready(gateway):
    assert (await control(gateway, "restart 0.3 --ready-after 1.0")).startswith("OK restart: port closed for 0.3 s")
    with pytest.raises(ConnectionRefusedError):  # answered at once; the port is closed meanwhile
        await asyncio.open_connection("127.0.0.1", gateway.port)
    assert "restarting" in (await control(gateway, "status"))
    await until(lambda: gateway.running)
    assert not gateway.ready and "not ready" in (await control(gateway, "status"))
    # A handshake is answered (version + time), then startApi goes nowhere: a Gateway still logging in.
    reader, writer = await raw_handshake(gateway.port, b"v157..178")
    assert (await asyncio.wait_for(read_frame(reader), 2))[0] == "178"
    writer.write(frame(71, 2, 9, ""))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(read_frame(reader), 0.3)
    await until(lambda: gateway.ready)
    # The client that connected meanwhile stays stuck until it retries, as on a real Gateway.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(read_frame(reader), 0.3)
    writer.close()
    ib = IB()
    await ib.connectAsync("127.0.0.1", gateway.port, 9, timeout=2)
    assert ib.isConnected()
    ib.disconnect()


async def test_ib_async_times_out_while_the_api_is_not_ready(gateway):
    await control(gateway, "restart 0 --ready-after 1.5")
    await until(lambda: gateway.running)
    ib = IB()
    with pytest.raises(TimeoutError):
        await ib.connectAsync("127.0.0.1", gateway.port, 1, timeout=0.5)
    await until(lambda: gateway.ready)
    await ib.connectAsync("127.0.0.1", gateway.port, 1, timeout=2)
    ib.disconnect()


@pytest.mark.parametrize("command", ["stop --rst", "restart 0.2 --rst"])
async def test_rst_drops_clients_with_a_reset(gateway, command):
    reader, writer = await raw_handshake(gateway.port, b"v157..178")
    await read_frame(reader)
    writer.write(frame(71, 2, 1, ""))
    await gateway.wait_for_clients(1)
    assert (await control(gateway, command)).startswith("OK")
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(), 2)
    writer.close()


async def test_stop_without_rst_closes_cleanly_and_start_reopens(gateway):
    reader, writer = await raw_handshake(gateway.port, b"v157..178")
    await read_frame(reader)
    assert await control(gateway, "stop") == "OK Shutting down: STOP command"  # IBC's STOP: File > Close
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()
    assert await control(gateway, "start") == "OK start" and gateway.running


async def test_start_cancels_a_restart_still_counting_down(gateway):
    await control(gateway, "restart 30")
    assert not gateway.running
    assert await control(gateway, "start") == "OK start"
    assert gateway.running and "restarting" not in await control(gateway, "status")


# ------------------------------------------------------------- rejection before the handshake
async def test_reject_rst_resets_ib_async_at_once(gateway, caplog):
    assert await control(gateway, "reject rst") == "OK reject"
    ib = IB()
    connecting = asyncio.create_task(ib.connectAsync("127.0.0.1", gateway.port, 1, timeout=5))
    # ib_async sees the reset at once (and, by itself, still waits out its timeout: the client's job)
    await until(lambda: "Connection reset by peer" in caplog.text, 2)
    connecting.cancel()
    await asyncio.gather(connecting, return_exceptions=True)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(), 2)
    writer.close()
    assert gateway.clients == []


async def test_reject_fin_closes_before_the_handshake_and_off_accepts_again(gateway):
    gateway.set_reject(Reject.FIN)
    reader, writer = await raw_handshake(gateway.port, b"v157..178")
    assert await asyncio.wait_for(reader.read(), 2) == b""  # FIN, not a word of handshake
    writer.close()
    assert await control(gateway, "reject off") == "OK reject"
    ib = IB()
    await ib.connectAsync("127.0.0.1", gateway.port, 1, timeout=2)
    ib.disconnect()


# ------------------------------------------------------------- Read-Only API
async def test_readonly_connect_works_and_orders_get_321(gateway, caplog):
    from ib_async import LimitOrder, Stock
    assert await control(gateway, "readonly on") == "OK readonly"
    ib = IB()
    seen = notices(ib)
    await ib.connectAsync("127.0.0.1", gateway.port, 1, timeout=2, readonly=True)
    assert "timed out" not in caplog.text
    trade = ib.placeOrder(Stock("AAPL", "SMART", "USD", conId=265598), LimitOrder("BUY", 1, 1.0))
    await until(lambda: any(code == 321 for _, code, _ in seen), 2)
    req_id, _, text = next(s for s in seen if s[1] == 321)
    assert req_id == trade.order.orderId and "The API interface is currently in Read-Only mode." in text
    ib.disconnect()


async def test_readonly_open_and_completed_orders_get_321_and_no_end(gateway, caplog):
    gateway.set_readonly(True)
    ib = IB()
    seen = notices(ib)
    await ib.connectAsync("127.0.0.1", gateway.port, 1, timeout=0.4)  # readonly=False: asks for orders
    assert "open orders request timed out" in caplog.text and "completed orders request timed out" in caplog.text
    assert [code for _, code, _ in seen].count(321) == 2
    ib.disconnect()


# ------------------------------------------------------------- hung and slow start-up sync
async def test_hang_executions_makes_ib_async_log_the_timeout(gateway, caplog):
    assert await control(gateway, "hang 7") == "OK hang"
    ib = IB()
    await ib.connectAsync("127.0.0.1", gateway.port, 1, timeout=0.4)
    assert ib.isConnected() and "executions request timed out" in caplog.text
    ib.disconnect()
    assert await control(gateway, "hang off") == "OK hang" and gateway.hang == frozenset()


async def test_hang_several_and_slow_answers_late(gateway, caplog):
    await control(gateway, "hang 99,5")
    assert gateway.hang == {99, 5}
    await control(gateway, "hang off")
    assert await control(gateway, "slow 61 0.6") == "OK slow"
    ib = IB()
    start = time.monotonic()
    await ib.connectAsync("127.0.0.1", gateway.port, 1, timeout=3)
    assert time.monotonic() - start >= 0.6 and "timed out" not in caplog.text
    ib.disconnect()
    await control(gateway, "slow 61 0")
    assert gateway.slow == {}


# ------------------------------------------------------------- nightly reset
async def test_reset_lost_deaf_sends_real_notices_and_ignores_heartbeats(gateway):
    ib = IB()
    seen = notices(ib)
    await ib.connectAsync("127.0.0.1", gateway.port, 1, timeout=2)
    seen.clear()
    assert (await control(gateway, "reset 1.5 lost --deaf")).startswith("OK reset")
    await until(lambda: len(seen) >= 4)
    assert [c for _, c, _ in seen] == [1100, 2103, 2105, 2157]
    assert seen[0][2] == NOTICE_TEXTS[1100] and seen[1][2] == "Market data farm connection is broken:usfarm"
    assert "reset lost" in await control(gateway, "status")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ib.reqCurrentTimeAsync(), 0.3)
    newcomer = IB()
    heard = notices(newcomer)
    await newcomer.connectAsync("127.0.0.1", gateway.port, 2, timeout=2)  # hears the link is down
    await until(lambda: len(heard) >= 4)
    assert [c for _, c, _ in heard][:4] == [1100, 2103, 2105, 2157]
    newcomer.disconnect()
    await until(lambda: len(seen) >= 8)
    assert [c for _, c, _ in seen[4:]] == [1101, 2104, 2106, 2158]
    assert ib.isConnected() and await asyncio.wait_for(ib.reqCurrentTimeAsync(), 2)
    ib.disconnect()


async def test_reset_kept_answers_heartbeats_and_account_summary(gateway):
    ib = IB()
    seen = notices(ib)
    await ib.connectAsync("127.0.0.1", gateway.port, 1, timeout=2)
    await control(gateway, "reset 0.3 kept")
    assert await asyncio.wait_for(ib.reqCurrentTimeAsync(), 2)  # not deaf
    await until(lambda: any(c == 1102 for _, c, _ in seen))
    assert await asyncio.wait_for(ib.reqAccountSummaryAsync(), 2) == []  # ib_async's request after 1102
    ib.disconnect()


# ------------------------------------------------------------- client id held
async def test_holdid_keeps_an_id_taken_after_its_client_left(gateway):
    assert await control(gateway, "holdid 1") == "OK holdid"
    first = IB()
    await first.connectAsync("127.0.0.1", gateway.port, 7, timeout=2)
    first.disconnect()
    await gateway.wait_for_clients(0, ready=False)
    again = IB()
    seen = notices(again)
    with pytest.raises(TimeoutError):
        await again.connectAsync("127.0.0.1", gateway.port, 7, timeout=0.5)
    assert (-1, 326, NOTICE_TEXTS[326]) in seen
    await asyncio.sleep(0.6)
    await again.connectAsync("127.0.0.1", gateway.port, 7, timeout=2)
    again.disconnect()


# ------------------------------------------------------------- notices
async def test_connect_notices_are_configurable_with_real_texts(gateway):
    assert await control(gateway, "connectnotices 2107,2108,2119,2110,2103,1100") == "OK connectnotices"
    ib = IB()
    seen = notices(ib)
    await ib.connectAsync("127.0.0.1", gateway.port, 1, timeout=2)
    await until(lambda: len(seen) >= 6)
    texts = {code: text for _, code, text in seen}
    assert texts[2107] == "HMDS data farm connection is inactive but should be available upon demand.ushmds"
    assert texts[2119] == "Market data farm is connecting:usfarm"
    assert texts[2110].startswith("Connectivity between Trader Workstation and server is broken")
    ib.disconnect()
    assert await control(gateway, "connectnotices default") == "OK connectnotices"
    assert "connectnotices" not in await control(gateway, "status")


async def test_notice_with_default_and_own_text(gateway):
    ib = IB()
    seen = notices(ib)
    await ib.connectAsync("127.0.0.1", gateway.port, 1, timeout=2)
    assert await control(gateway, "notice 2110") == "OK notice 2110 sent to 1 client(s)"
    assert (await control(gateway, "notice 2103 Market data farm connection is broken:eufarm")).startswith("OK")
    await until(lambda: len(seen) >= 5)
    assert seen[-2][2] == NOTICE_TEXTS[2110] and seen[-1][2].endswith(":eufarm")
    ib.disconnect()


# ------------------------------------------------------------- requests it does not serve
async def test_unserved_requests_get_what_a_real_gateway_answers(gateway, caplog):
    from ib_async import Stock
    ib = IB()
    seen = notices(ib)
    await ib.connectAsync("127.0.0.1", gateway.port, 1, timeout=2)
    ib.client.reqIds(1)
    ib.client.reqManagedAccts()
    assert await asyncio.wait_for(ib.reqContractDetailsAsync(Stock("NOPE", "SMART", "USD")), 2) == []
    bars = await asyncio.wait_for(ib.reqHistoricalDataAsync(Stock("AAPL", "SMART", "USD"), "", "1 D", "1 hour",
                                                            "TRADES", True), 2)
    assert list(bars) == []
    ib.reqMktData(Stock("AAPL", "SMART", "USD", conId=265598))
    ib.client.send(12345, 1, "whatever")
    await until(lambda: {200, 162, 354, 321} <= {c for _, c, _ in seen})
    texts = {code: text for _, code, text in seen}
    assert texts[200] == "No security definition has been found for the request"
    assert texts[162].startswith("Historical Market Data Service error message:") and "AAPL@SMART Trades" in texts[162]
    assert texts[354].startswith("Requested market data is not subscribed")
    assert "12345" in texts[321] and "does not serve" in caplog.text
    assert caplog.text.count("<<< 9,1,1") == 2  # nextValidId at connect, and for reqIds
    assert caplog.text.count("<<< 15,1,DUO779750") == 2  # managedAccounts at connect, and for reqManagedAccts
    ib.disconnect()


# ------------------------------------------------------------- status and argument checking
async def test_status_lists_every_active_fault(gateway):
    for command in ("readonly on", "reject fin", "hang 7,99", "slow 61 2", "holdid 30", "latency 0.01", "freeze",
                    "connectnotices 2107", "ready off"):
        assert (await control(gateway, command)).startswith("OK"), command
    status = await control(gateway, "status")
    for part in ("readonly", "reject fin", "hang 7,99", "slow 61 2 s", "holdid 30 s", "latency 0.01 s", "frozen",
                 "connectnotices 2107", "not ready"):
        assert part in status, part
    gateway.unfreeze()


BAD = ["ready maybe", "ready", "ready on off", "latency -1", "latency nan", "latency inf", "latency x",
       "restart -5", "restart 5 --ready-after", "restart 5 --ready-after -1", "restart 5 --bogus", "restart 1 2",
       "restart nan", "stop now", "stop --ready-after 3", "start 5", "reject maybe", "reject", "readonly yes",
       "hang", "hang 7,x", "hang 71", "hang 0", "hang 7 99", "slow 7", "slow 7 -1", "slow x 1", "slow 7 inf",
       "reset 10", "reset 10 gone", "reset -1 lost", "reset 10 lost --loud", "holdid", "holdid -3", "holdid abc",
       "notice", "notice abc", "notice -5", "connectnotices", "connectnotices 2107,abc", "drop everything",
       "freeze now", "status please", "garbage lots",
       # Words that int() / float() take or choke on but that are not plain ASCII numbers.
       "slow 1,2 5", "slow 7,8 1", "notice ²", "notice ١٢ hello", "connectnotices ²", "connectnotices 2107,²",
       "hang ²", "latency ١", "latency 1_0", "holdid ٣", "restart ²", "reset ١ lost", "slow ٧ 1"]


@pytest.mark.parametrize("command", BAD)
async def test_every_bad_argument_is_an_error_that_changes_nothing(gateway, command):
    before = (gateway.running, gateway.ready, gateway.faults(), gateway.latency, gateway.slow.copy(), gateway.hang)
    answer = await control(gateway, command)
    assert answer.startswith(f"ERROR {command.split()[0]}") and "\n" not in answer, answer
    assert len(answer) < 200 and "Traceback" not in answer
    assert (gateway.running, gateway.ready, gateway.faults(), gateway.latency, gateway.slow, gateway.hang) == before


ODD_WORDS = ["²", "١٢", "1,2", "1_0", "--", "--rst", "-", "0x10", "1e999", "\u00a0", "x" * 300, "7,", ",", "on,off"]


async def test_no_command_raises_whatever_its_words(gateway):
    """The control port's rule: every line gets one OK or ERROR line back, never an exception."""
    for cmd in COMMANDS:
        for word in ODD_WORDS:
            for line in (f"{cmd} {word}", f"{cmd} {word} {word}", f"{cmd} 1 {word}"):
                answer = await control(gateway, line)
                assert answer.startswith(("OK", "ERROR")) and "\n" not in answer, (line, answer)
        gateway.unfreeze()


async def test_the_control_port_refuses_an_overlong_line_in_one_line_and_keeps_serving(gateway):
    ctl = ControlServer(gateway, port=0)
    await ctl.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", ctl.port)
        writer.write(b"notice 2110 " + b"x" * 70_000 + b"\n")
        answer = await asyncio.wait_for(reader.readline(), 2)
        assert answer.startswith(b"ERROR line longer than") and answer.count(b"\n") == 1, answer[:200]
        assert await asyncio.wait_for(reader.read(), 2) == b"", "then it hangs up: the rest of that line is no command"
        writer.close()
        assert (await send_control("127.0.0.1", ctl.port, "status")).startswith("OK running")
    finally:
        await ctl.stop()


async def test_start_and_restart_onto_a_port_taken_meanwhile_say_so(gateway, caplog):
    assert await control(gateway, "stop") == "OK Shutting down: STOP command"
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", gateway.port))
        squatter.listen()
        answer = await control(gateway, "start")
        assert answer.startswith("ERROR start:") and "address already in use" in answer, answer
        assert (await control(gateway, "restart 0")).startswith("OK restart")
        await until(lambda: not any(f.startswith("restarting") for f in gateway.faults()))
        assert not gateway.running and "restart failed: " in caplog.text
    assert await control(gateway, "start") == "OK start"


async def test_send_control_closes_its_socket_on_timeout():
    closed = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # EOF only when the client closes its side
        closed.set()
        writer.close()
    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        answer = await send_control("127.0.0.1", port, "status", timeout=0.3)
        assert answer == f"ERROR no simulated Gateway control port at 127.0.0.1:{port}: no answer within 0.3 s", answer
        await asyncio.wait_for(closed.wait(), 2)
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(("reply", "says"), [
    (b"<!DOCTYPE HTML>\n<html>", "it answered '<!DOCTYPE HTML>', which the simulator never says"),
    (b"HTTP/1.0 400 Bad request\r\n\r\n", "it answered 'HTTP/1.0 400 Bad request', which the simulator never says"),
    (b"\xff\xfe\x00garbage\n", "it answered '\\ufffd\\ufffd\\x00garbage', which the simulator never says"),
    (b"O" * 70_000, "it answered 'OOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOO', which the simulator never says"),
    (b"", "it hung up without answering"),
])
async def test_send_control_to_something_else_says_so_in_one_line(reply, says):
    async def other(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(reply)
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(other, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        answer = await send_control("127.0.0.1", port, "status", timeout=2)
        assert answer == f"ERROR no simulated Gateway control port at 127.0.0.1:{port}: {says}", answer
    finally:
        server.close()
        await server.wait_closed()
