"""IBKRClient at its edges, against the simulated Gateway over real sockets with the real ib_async:
a heartbeat that fails oddly (one fault put into the live ib_async object), a disconnect() racing a connect()."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import pytest

from bot.ibkr.client import IBKRClient
from bot.ibkr.errors import NotConnected
from bot.ibkr.events import Disconnected, DisconnectReason, Reconnected, ReconnectFailedAttempt, next_event
from tests.conftest import FAST
from tests.test_client import every


async def test_an_unexpected_heartbeat_failure_is_logged_and_taken_for_a_drop(gateway, caplog):
    client = IBKRClient("127.0.0.1", gateway.port, 1, replace(FAST, heartbeat_interval=0.1, min_ping_spacing=0,
                                                              reconnect=every(0.1)))
    await client.connect()

    async def broken() -> None:
        raise RuntimeError("ib_async lost track of its requests")

    async with client.events.stream() as q:
        client.ib.reqCurrentTimeAsync = broken  # this session only: the reconnect opens a fresh one
        dropped = await next_event(q, Disconnected, 2)
        await next_event(q, Reconnected, 3)
    assert dropped.reason is DisconnectReason.OTHER and "RuntimeError" in dropped.detail
    assert any("heartbeat failed" in r.getMessage() and r.exc_info and r.levelno == logging.ERROR
               for r in caplog.records)
    assert await client.is_connected()
    await client.ping()
    await client.disconnect()


async def test_disconnect_during_connect_leaves_no_session_behind(gateway):
    client = IBKRClient("127.0.0.1", gateway.port, 1, replace(FAST, reconnect=every(0.1)))
    gateway.set_latency(0.3)  # every answer a little late: the connect is still on its way
    connecting = asyncio.create_task(client.connect())
    await gateway.wait_for_clients(1, ready=False)
    await client.disconnect()
    with pytest.raises(NotConnected, match="disconnect"):
        await asyncio.wait_for(connecting, 3)
    assert not await client.is_connected() and client.ib is None
    await gateway.wait_for_clients(0, ready=False)


async def test_an_unexpected_error_while_reconnecting_is_an_attempt_said_not_a_silent_end(gateway, caplog):
    client = IBKRClient("127.0.0.1", gateway.port, 1, replace(FAST, reconnect=every(0.1)))
    await client.connect()
    opened = client._open_session
    surprises = iter([RuntimeError("ib_async lost track of its requests")])

    async def once_broken(*args, **kwargs):  # one fault in the next attempt only
        if (error := next(surprises, None)) is not None:
            raise error
        return await opened(*args, **kwargs)

    client._open_session = once_broken
    async with client.events.stream() as q:
        await gateway.drop_clients()
        failed = await next_event(q, ReconnectFailedAttempt, 3)
        await next_event(q, Reconnected, 3)
    assert "unexpected RuntimeError" in failed.error
    assert any("reconnect attempt 1" in r.getMessage() and r.exc_info and r.levelno == logging.ERROR
               for r in caplog.records)
    await client.disconnect()
