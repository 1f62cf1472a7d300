"""bot.ibkr.ibc against the simulator's control port and against plain TCP servers that are not IBC
(real sockets): every failure is one typed error, one line naming the address."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, time

import pytest

from bot.ibkr.ibc import (
    IbcClient,
    IbcCommandError,
    IbcError,
    IbcNotIbc,
    IbcRefused,
    IbcRestartMissed,
    IbcTimeout,
    IbcUnreachable,
    RestartAccepted,
)
from bot.lab.ibc_sim import IbcProfile, clock_label, next_minute
from bot.lab.simctl import ControlServer
from tests.conftest import free_port
from tests.test_ibc_sim import early_in_minute
from tests.test_simulator import until

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def ibc(gateway) -> AsyncIterator[IbcClient]:
    gateway.ibc.profile = IbcProfile(minute=0.5, down=0.2, ready_after=0.1, reconnect_data=0.1)
    ctl = ControlServer(gateway, port=0)
    await ctl.start()
    yield IbcClient("127.0.0.1", ctl.port, timeout=2)
    await ctl.stop()


@contextlib.asynccontextmanager
async def server(handle: Handler) -> AsyncIterator[IbcClient]:
    """A plain TCP server on loopback running ``handle`` per connection; a client for it."""
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield IbcClient("127.0.0.1", srv.sockets[0].getsockname()[1], timeout=0.5)
    finally:
        srv.close()


def one_line(error: IbcError, client: IbcClient) -> str:
    message = str(error)
    assert "\n" not in message and message.startswith(f"IBC at 127.0.0.1:{client.port}: "), message
    return message


async def test_restart_through_the_simulated_ibc(ibc, gateway):
    await early_in_minute(0.5)
    asked = datetime.now().timestamp()
    accepted = await ibc.restart()
    assert accepted.replies[0] == "RESTART in progress"
    assert accepted.at is not None and f"{accepted.at:%I:%M}" == clock_label(next_minute(asked, 0.5))[:5]
    with pytest.raises(IbcCommandError) as again:
        await ibc.restart()
    assert again.value.reply == "RESTART already in progress"
    assert one_line(again.value, ibc).endswith("RESTART refused: ERROR RESTART already in progress")
    await until(lambda: not gateway.running, timeout=3)
    await until(lambda: gateway.running and gateway.ready, timeout=3)


async def test_the_other_commands_and_ibcs_errors(ibc, gateway):
    await ibc.reconnect_data()
    await ibc.reconnect_account()
    with pytest.raises(IbcCommandError, match=r"ENABLEAPI refused: ERROR ENABLEAPI is not valid for the IB Gateway$"):
        await ibc.command("ENABLEAPI")
    with pytest.raises(IbcCommandError, match=r"DANCE refused: ERROR Command invalid$"):
        await ibc.command("DANCE")
    assert await ibc.stop() == "Shutting down: STOP command" and not gateway.running
    with pytest.raises(IbcCommandError, match="STOP already in progress"):
        await ibc.stop()
    with pytest.raises(ValueError):
        await ibc.command("RESTART\nSTOP")  # one word, one line: never two commands smuggled in one


async def test_nothing_listening_is_unreachable():
    client = IbcClient("127.0.0.1", free_port(), timeout=1)
    with pytest.raises(IbcUnreachable) as err:
        await client.restart()
    assert "connection refused" in one_line(err.value, client) and "CommandServerPort=" in str(err.value)


async def test_a_name_that_does_not_resolve_is_unreachable():
    client = IbcClient("no-such-host.invalid", 7462, timeout=2)
    with pytest.raises(IbcUnreachable, match=r"^IBC at no-such-host.invalid:7462: cannot connect .*check ibc.host$"):
        await client.restart()


@pytest.mark.parametrize("reset", [False, True])
async def test_closed_without_a_word_is_a_controlfrom_refusal(reset):
    async def refuse(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if reset:  # what a close with our command unread sends
            writer.transport.abort()
        else:
            writer.close()
    async with server(refuse) as client:
        with pytest.raises(IbcRefused) as err:
            await client.restart()
        assert "ControlFrom" in one_line(err.value, client)


async def test_the_gateways_api_port_is_no_ibc(gateway):
    client = IbcClient("127.0.0.1", gateway.port, timeout=1)
    with pytest.raises(IbcRefused, match="the Gateway's API port does this too"):
        await client.restart()


async def test_a_silent_peer_times_out():
    async def silent(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        await reader.read()
    async with server(silent) as client:
        with pytest.raises(IbcTimeout) as err:
            await client.reconnect_data()
        assert "no reply to RECONNECTDATA within 0.5 s" in one_line(err.value, client)


async def test_a_web_server_is_not_ibc():
    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()
    async with server(http) as client:
        with pytest.raises(IbcNotIbc) as err:
            await client.restart()
        assert "'HTTP/1.1 400 Bad Request'" in one_line(err.value, client) and "IBC never says" in str(err.value)


async def test_binary_and_endless_lines_are_not_ibc():
    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"\xff" * 10_000)
        await writer.drain()
        await reader.read()
    async with server(flood) as client:
        with pytest.raises(IbcNotIbc):
            await client.stop()


async def test_older_ibc_and_info_lines_are_understood():
    replies = {b"RESTART": b"INFO IBC Command Server\nINFO Restarting TWS\nOK Restarting at 09:05 PM\n"}

    async def ibc_323(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(replies[(await reader.readline()).strip()])
        await writer.drain()
        writer.close()
    async with server(ibc_323) as client:
        accepted = await client.restart()
    assert accepted.at == time(21, 5) and accepted.replies == ("Restarting at 09:05 PM",)
    replies[b"RESTART"] = b"OK RESTART in progress\n"  # TWS: File > Restart at once, then the hang-up
    async with server(ibc_323) as client:
        assert (await client.restart()).at is None


def test_the_named_minute_as_a_moment():
    now = datetime(2026, 3, 2, 23, 59, 30)
    assert RestartAccepted(time(0, 0), ()).due(now) == datetime(2026, 3, 3, 0, 0)
    assert RestartAccepted(time(23, 59), ()).due(now) == datetime(2026, 3, 2, 23, 59)  # under way
    assert RestartAccepted(None, ()).due(now) == now
    missed = IbcRestartMissed("127.0.0.1:7462", RestartAccepted(time(10, 4), ()), 180)
    assert str(missed).startswith("IBC at 127.0.0.1:7462: accepted RESTART at 10:04 but the Gateway never went down")
