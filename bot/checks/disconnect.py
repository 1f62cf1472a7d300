"""Graceful disconnect: the client ends clean, no auto-reconnect fires, nothing is logged as an error."""

from __future__ import annotations

import asyncio
import logging
import time

from bot.checks.base import Check, CheckContext, Recorder
from bot.ibkr.client import ConnectionState
from bot.ibkr.events import ClientEvent, Disconnected, DisconnectReason, Reconnecting

# After disconnect() we watch this long for a reconnect that should not happen.
QUIET_PERIOD = 1.0


class ErrorLogWatch(logging.Handler):
    """Counts ERROR records from gwbot and ib_async while installed."""

    LOGGERS = ("bot", "ib_async", "storage")

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> ErrorLogWatch:
        for name in self.LOGGERS:
            logging.getLogger(name).addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self)


class DisconnectCheck(Check):
    name = "disconnect"

    async def execute(self, ctx: CheckContext, rec: Recorder) -> None:
        events: list[ClientEvent] = []
        client = ctx.client()
        client.events.subscribe(events.append)
        await client.connect()
        rec.progress("Connected; disconnecting gracefully")
        with ErrorLogWatch() as errors:
            start = time.monotonic()
            await client.disconnect()
            rec.metric("disconnect", (time.monotonic() - start) * 1000, "ms")
            await asyncio.sleep(QUIET_PERIOD)
        locals_ = [e for e in events if isinstance(e, Disconnected) and e.reason is DisconnectReason.LOCAL]
        if not locals_:
            rec.fail("No local-disconnect event was seen")
        if any(isinstance(e, Disconnected) and e.reason is not DisconnectReason.LOCAL for e in events):
            rec.fail("The disconnect was reported as a drop, not as our own")
        if any(isinstance(e, Reconnecting) for e in events):
            rec.fail("Auto-reconnect fired after a deliberate disconnect")
        if client.state is not ConnectionState.DISCONNECTED or await client.is_connected():
            rec.fail(f"The client is still {client.state} after disconnect()")
        for r in errors.records:
            rec.fail(f"Error logged during disconnect: {r.name}: {r.getMessage()}")
        if not rec.failures:
            rec.note(f"Disconnected cleanly; no reconnect and no error in the {QUIET_PERIOD:g} s after")
