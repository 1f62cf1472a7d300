"""Graceful disconnect: the client ends clean, no auto-reconnect fires, nothing is logged as an error."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator

from bot.checks.base import Check, CheckContext, Recorder, mark, passed
from bot.ibkr.client import CLIENT_ATTR, ConnectionState, IBKRClient
from bot.ibkr.events import ClientEvent, Disconnected, DisconnectReason, GatewayNotice, NoticeKind, Reconnecting
from bot.journal import LogSink
from storage.models import CheckRecord, RunRecord

# After disconnect() we watch this long for a reconnect that should not happen.
QUIET_PERIOD = 1.0
DISCONNECT = "disconnect"  # ms disconnect() took


@contextlib.contextmanager
def client_errors(client: IBKRClient) -> Iterator[list[str]]:
    """Errors of ONE client while open: its own ERROR log lines and the errors its events
    report. Never another client's or another run's: records are matched on the client's
    identity (CLIENT_ATTR), so ib_async's process-wide lines never count, since they cannot say
    which client a line is about and log mere notices (1100/1101) at ERROR. Gateway notices are
    judged by code and meaning: only a request's error counts.
    """
    lines: list[str] = []

    def on_event(event: ClientEvent) -> None:
        if isinstance(event, GatewayNotice) and event.notice is NoticeKind.ERROR:
            lines.append(f"Gateway error {event.code}: {event.message}")

    unsubscribe = client.events.subscribe(on_event)
    try:
        with LogSink(lambda record, text: lines.append(f"{record.name}: {text}"), logging.ERROR,
                     lambda record: getattr(record, CLIENT_ATTR, None) == client.tag):
            yield lines
    finally:
        unsubscribe()


class DisconnectCheck(Check):
    name = "disconnect"
    section = "Connection Test"
    key_figures = (DISCONNECT, "clean in {disconnect:.1f} ms")

    @classmethod
    def report_lines(cls, run: RunRecord, check: CheckRecord | None) -> list[str]:
        return [f"- {mark(passed(check))} Disconnected gracefully"]

    async def execute(self, ctx: CheckContext, rec: Recorder) -> None:
        events: list[ClientEvent] = []
        client = ctx.client()
        client.events.subscribe(events.append)
        await client.connect()
        rec.progress("Connected; disconnecting gracefully")
        with client_errors(client) as errors:
            start = time.monotonic()
            await client.disconnect()
            rec.metric(DISCONNECT, (time.monotonic() - start) * 1000, "ms")
            await asyncio.sleep(QUIET_PERIOD)
        if not any(isinstance(e, Disconnected) and e.reason is DisconnectReason.LOCAL for e in events):
            rec.fail("No local-disconnect event was seen")
        if any(isinstance(e, Disconnected) and e.reason is not DisconnectReason.LOCAL for e in events):
            rec.fail("The disconnect was reported as a drop, not as our own")
        if any(isinstance(e, Reconnecting) for e in events):
            rec.fail("Auto-reconnect fired after a deliberate disconnect")
        if client.state is not ConnectionState.DISCONNECTED or await client.is_connected():
            rec.fail(f"The client is still {client.state} after disconnect()")
        for line in errors:
            rec.fail(f"Error logged during disconnect: {line}")
        if not rec.failures:
            rec.note(f"Disconnected cleanly; no reconnect and no error in the {QUIET_PERIOD:g} s after")
