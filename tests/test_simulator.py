"""The simulated Gateway on the wire: raw sockets, and the real ib_async client."""

from __future__ import annotations

import asyncio
import struct
import time

import pytest
from ib_async import IB

from bot.ibkr.simulator import ControlServer, SimulatedGateway, frame, read_frame, send_control


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
        assert await send_control("127.0.0.1", ctl.port, "STOP") == "OK stop"
        assert not gateway.running
        assert await send_control("127.0.0.1", ctl.port, "restart 0.1") == "OK restart"
        assert gateway.running
        assert await send_control("127.0.0.1", ctl.port, "READY off") == "OK ready" and not gateway.ready
        assert (await send_control("127.0.0.1", ctl.port, "LATENCY x")).startswith("ERROR bad arguments")
        assert (await send_control("127.0.0.1", ctl.port, "DANCE")).startswith("ERROR unknown command DANCE")
    finally:
        await ctl.stop()
