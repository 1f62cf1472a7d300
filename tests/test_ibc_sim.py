"""The simulator's control port speaks IBC's command protocol (IBC 3.24.1's CommandDispatcher,
RestartTask, StopTask), over real sockets, beside the simulator's own fault commands."""

from __future__ import annotations

import asyncio
import re
import sys
import time

import pytest
from ib_async import IB

from bot.lab.ibc_sim import IbcProfile, clock_label, next_minute
from bot.lab.simctl import ControlServer, send_control
from tests.conftest import free_port
from tests.test_cli import ROOT
from tests.test_simulator import until

RESTART_AT = re.compile(r"OK RESTART at (0\d|1[0-2]):[0-5]\d [AP]M")


@pytest.fixture
async def ibc(gateway):
    """A connection to the control port of the ``gateway`` fixture: (reader, writer, gateway)."""
    gateway.ibc.profile = IbcProfile(minute=0.6, down=0.3, ready_after=0.3, reconnect_data=0.2)
    ctl = ControlServer(gateway, port=0)
    await ctl.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", ctl.port)
    yield reader, writer, ctl
    writer.close()
    await ctl.stop()


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str, replies: int = 1) -> list[str]:
    writer.write(line.encode() + b"\n")
    await writer.drain()
    return [(await asyncio.wait_for(reader.readline(), 2)).decode().rstrip("\n") for _ in range(replies)]


async def early_in_minute(minute: float) -> None:
    """Wait for the start of one of IBC's (short) minutes, so the restart it names is most of one away."""
    await until(lambda: time.time() % minute < minute / 6, timeout=2 * minute)


async def closed(reader: asyncio.StreamReader) -> bool:
    return await asyncio.wait_for(reader.read(), 2) == b""


async def test_ibcs_replies_word_for_word_several_commands_on_one_connection(ibc):
    reader, writer, _ = ibc
    assert await ask(reader, writer, "reconnectaccount") == ["OK "]  # writeAck(""): "OK " with its space
    assert await ask(reader, writer, "EnableApi") == ["ERROR ENABLEAPI is not valid for the IB Gateway"]
    assert await ask(reader, writer, "DANCE") == ["ERROR Command invalid"]
    assert await ask(reader, writer, "dance 3 times") == ["ERROR Command invalid"]
    writer.write(b"\n   \n")  # IBC answers a blank line with its prompt, empty by default: nothing
    assert await ask(reader, writer, "RECONNECTACCOUNT") == ["OK "]
    assert await ask(reader, writer, "exit") == ["OK Goodbye"]
    assert await closed(reader)


async def test_restart_names_the_minute_and_restarts_then(ibc, gateway):
    reader, writer, ctl = ibc
    await early_in_minute(0.6)
    asked = time.time()
    first, second = await ask(reader, writer, "restart", 2)
    assert first == "OK RESTART in progress" and RESTART_AT.fullmatch(second), second
    assert await closed(reader), "IBC hangs up after RESTART"
    due = next_minute(asked, 0.6)
    assert second == f"OK RESTART at {clock_label(due)}"
    assert gateway.running and any(f.startswith("IBC RESTART at") for f in gateway.faults())
    # A second RESTART before the minute: RestartTask's lock.
    assert await send_control("127.0.0.1", ctl.port, "RESTART") == "ERROR RESTART already in progress"
    await until(lambda: not gateway.running, timeout=3)
    assert time.time() >= due - 0.05, "not before the named minute"
    await until(lambda: gateway.running, timeout=3)
    assert not gateway.ready, "the API is ready only a while after the port opens"
    await until(lambda: gateway.ready, timeout=3)
    # A new Gateway process: its IBC takes RESTART again.
    assert (await send_control("127.0.0.1", ctl.port, "RESTART")).startswith("OK RESTART in progress\n")


async def test_restart_resets_connected_api_clients_at_the_minute(ibc, gateway):
    reader, writer, _ = ibc
    ib = IB()
    await ib.connectAsync("127.0.0.1", gateway.port, clientId=3, timeout=3)
    try:
        await early_in_minute(0.6)
        await ask(reader, writer, "RESTART", 2)
        assert ib.isConnected(), "the restart waits for its minute"
        await until(lambda: not ib.isConnected(), timeout=3)
    finally:
        ib.disconnect()


async def test_stop_shuts_down_once(ibc, gateway):
    reader, writer, ctl = ibc
    assert await ask(reader, writer, "Stop") == ["OK Shutting down: STOP command"]
    assert await closed(reader) and not gateway.running
    assert await send_control("127.0.0.1", ctl.port, "STOP") == "ERROR STOP already in progress"
    assert await send_control("127.0.0.1", ctl.port, "start") == "OK start"  # a new Gateway process
    assert await send_control("127.0.0.1", ctl.port, "STOP") == "OK Shutting down: STOP command"


async def test_reconnectdata_breaks_the_farms_then_they_are_ok(ibc, gateway):
    reader, writer, _ = ibc
    ib = IB()
    codes: list[int] = []
    ib.errorEvent += lambda _req, code, *_: codes.append(code)
    await ib.connectAsync("127.0.0.1", gateway.port, clientId=4, timeout=3)
    try:
        codes.clear()
        assert await ask(reader, writer, "RECONNECTDATA") == ["OK "]
        await until(lambda: len(codes) == 6, timeout=3)
        assert codes == [2103, 2105, 2157, 2104, 2106, 2158]
    finally:
        ib.disconnect()


async def test_the_simulators_own_commands_keep_their_arguments(ibc, gateway):
    reader, writer, _ = ibc
    assert await ask(reader, writer, "restart 0.1 --ready-after 0.1") == [
        "OK restart: port closed for 0.1 s, API ready 0.1 s after it reopens"]
    await until(lambda: gateway.running and gateway.ready, timeout=3)
    assert await ask(reader, writer, "stop --rst") == ["OK stop (clients reset)"]
    assert await ask(reader, writer, "start") == ["OK start"]
    assert await ask(reader, writer, "restart") == ["OK RESTART in progress"], "bare, it is IBC's"


def test_the_minute_is_the_next_one_or_the_one_after_from_second_58():
    base = time.mktime((2026, 3, 2, 13, 4, 0, 0, 0, -1))  # 13:04:00 local time
    assert next_minute(base + 30) == base + 60
    assert next_minute(base + 57.9) == base + 60
    assert next_minute(base + 58) == base + 120
    assert clock_label(base + 60) == "01:05 PM"
    assert clock_label(time.mktime((2026, 3, 2, 0, 7, 0, 0, 0, -1))) == "12:07 AM"
    assert clock_label(time.mktime((2026, 3, 2, 12, 0, 0, 0, 0, -1))) == "12:00 PM"


async def test_gwbot_simulate_ibc_minute_restarts_soon():
    port, control = free_port(), free_port()
    sim = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "simulate", "--port", str(port), "--control-port", str(control),
        "--ibc-minute", "0.5", "--ibc-down", "0.2", "--ibc-ready-after", "0.2",
        cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert sim.stdout is not None
        await asyncio.wait_for(sim.stdout.readline(), 20)  # the banner: printed once it listens
        answer = await send_control("127.0.0.1", control, "RESTART")
        assert answer.startswith("OK RESTART in progress\nOK RESTART at "), answer

        async def refused() -> bool:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except ConnectionRefusedError:
                return True
            writer.close()
            return False
        async with asyncio.timeout(3):
            while not await refused():
                await asyncio.sleep(0.02)
        async with asyncio.timeout(3):  # and open again
            while await refused():
                await asyncio.sleep(0.02)
    finally:
        sim.terminate()
        await sim.wait()
