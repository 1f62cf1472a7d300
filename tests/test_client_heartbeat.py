"""The heartbeat never ends silently: IBKRClient against the simulated Gateway over real sockets,
with the real ib_async; one fault is put into the live ib_async object (its ping raising)."""

from __future__ import annotations

import logging
from dataclasses import replace

from bot.ibkr.client import IBKRClient
from bot.ibkr.events import Disconnected, DisconnectReason, Reconnected, next_event
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
