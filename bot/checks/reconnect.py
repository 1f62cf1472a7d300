"""Step 4, guided: the operator stops and restarts the Gateway; we time the drop and the return."""

from __future__ import annotations

import asyncio
import time

from bot.checks.base import Check, CheckContext, OperatorAction, Recorder, await_operator, mark, passed
from bot.checks.disconnect import client_errors
from bot.ibkr.client import IBKRClient, wait_for_port
from bot.ibkr.errors import HINT_GATEWAY_NOT_RUNNING, HINT_RECONNECT_FAILS
from bot.ibkr.events import (
    Disconnected,
    Reconnected,
    ReconnectFailedAttempt,
    ReconnectGaveUp,
    Reconnecting,
    next_event,
)
from storage.models import CheckRecord, RunRecord

# After the operator says Done, how long the event itself may still take to show.
STOP_GRACE = 10.0
# How often we knock on the port to time the Gateway's return; the figure's resolution.
PORT_POLL = 0.05
# Metric names: seconds, but for the attempts.
PROMPT_TO_DROP, PROMPT_TO_RECONNECTED = "prompt_to_drop", "prompt_to_reconnected"
PORT_BACK_TO_RECONNECTED, BACK_TO_RECONNECTED = "port_back_to_reconnected", "back_to_reconnected"
ATTEMPTS, DOWNTIME = "reconnect_attempts", "downtime"


class ReconnectCheck(Check):
    name = "reconnect"
    section = "Auto-Reconnect Test"
    key_figures = (BACK_TO_RECONNECTED, "drop seen {prompt_to_drop:.2f} s after the prompt; reconnected "
                   "{back_to_reconnected:.2f} s after the Gateway was back, attempt {reconnect_attempts:.0f}")

    @classmethod
    def report_lines(cls, run: RunRecord, check: CheckRecord | None) -> list[str]:
        within = float(run.config.get("checks", {}).get("reconnect_within", 30))
        if check is None and run.check("drill") is not None:
            return []  # the drill did this step
        if check is None:
            return [f"- {mark(None)} {text}" for text in
                    ("Detected Gateway shutdown", f"Reconnected within {within:g} seconds",
                     "No errors during reconnection")]
        detected, back = check.metric(PROMPT_TO_DROP), check.metric(BACK_TO_RECONNECTED)
        return [
            f"- {mark(detected is not None)} Detected Gateway shutdown"
            + (f" ({detected:.2f} s after the prompt)" if detected is not None else ""),
            f"- {mark(back is not None and back <= within)} Reconnected within {within:g} seconds"
            + (f" ({back:.2f} s after the Gateway was back, {check.metric(ATTEMPTS) or 0:.0f} attempt(s))"
               if back is not None else ""),
            f"- {mark(passed(check) if back is not None else False)} No errors during reconnection",
        ]

    async def execute(self, ctx: CheckContext, rec: Recorder) -> None:
        client = ctx.client()
        async with client.events.stream() as events:
            await client.connect()
            try:
                if await self._stop_phase(ctx, rec, events):
                    await self._start_phase(ctx, rec, client, events)
            finally:
                await client.disconnect()

    async def _stop_phase(self, ctx: CheckContext, rec: Recorder, events: asyncio.Queue) -> bool:
        timeout = ctx.config.checks.operator_timeout
        rec.progress("Connected. Waiting for the operator to stop the Gateway")
        prompted = time.monotonic()
        dropped, reply = await await_operator(
            ctx, OperatorAction.STOP_GATEWAY,
            f"Stop the Gateway now ({ctx.gateway.host}:{ctx.gateway.port}). I will notice the drop by myself.",
            next_event(events, Disconnected, None), timeout, STOP_GRACE)
        if dropped is None:
            if reply is None:
                rec.fail(f"Nobody stopped the Gateway within {timeout:g} s",
                         ("Run the check again and follow the prompts",))
            else:
                rec.fail("The operator said the Gateway was stopped, but the connection was still up "
                         f"{STOP_GRACE:g} s later",
                         ("Make sure the Gateway that was stopped is the one at "
                          f"{ctx.gateway.host}:{ctx.gateway.port}",))
            return False
        detected = dropped.mono - prompted
        rec.metric(PROMPT_TO_DROP, detected, "s")
        rec.note(f"Detected Gateway shutdown ({dropped.reason}) {detected:.2f} s after the prompt")
        await ctx.operator.tell(f"🔌 Drop detected ({dropped.reason}), {detected:.1f} s after the prompt.")
        return True

    async def _start_phase(self, ctx: CheckContext, rec: Recorder, client: IBKRClient, events: asyncio.Queue) -> None:
        """The budget runs from the prompt to start the Gateway. "Back" is the API being ready,
        not the port opening: a Gateway logging in accepts connections long before it serves
        the API, and tries that fail meanwhile are the Gateway still starting, not errors."""
        within, timeout = ctx.config.checks.reconnect_within, ctx.config.checks.operator_timeout
        attempts: list[ReconnectFailedAttempt | Reconnecting] = []
        unsubscribe = client.events.subscribe(
            lambda e: attempts.append(e) if isinstance(e, ReconnectFailedAttempt | Reconnecting) else None)
        # Times the Gateway's return: when its port accepts again after having been down.
        watcher = asyncio.create_task(wait_for_port(ctx.gateway.host, ctx.gateway.port, PORT_POLL, after_down=True))
        rec.progress("Gateway down. Waiting for the operator to start it again")
        prompted = time.monotonic()
        try:
            with client_errors(client) as errors:
                event, reply = await await_operator(
                    ctx, OperatorAction.START_GATEWAY,
                    "Start the Gateway again now. The client knocks on its port until it opens, then "
                    "reconnects as soon as the API is ready (logged in).",
                    next_event(events, (Reconnected, ReconnectGaveUp), None), timeout + within, within)
        finally:
            unsubscribe()
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        port_back = None if watcher.cancelled() else watcher.result()
        if event is None:
            if reply is None:
                rec.fail(f"The client had not reconnected {timeout + within:g} s after the prompt to start the Gateway "
                         f"(operator_timeout {timeout:g} s + reconnect_within {within:g} s)", HINT_GATEWAY_NOT_RUNNING)
            else:
                rec.fail("The operator said the Gateway was started, but the client had not reconnected "
                         f"{within:g} s later",
                         HINT_RECONNECT_FAILS)
            return
        if isinstance(event, ReconnectGaveUp):
            rec.metric(ATTEMPTS, float(event.attempts), "")
            rec.fail(f"Auto-reconnect gave up after {event.attempts} attempts ({event.downtime:.1f} s): "
                     f"{event.last_error}",
                     HINT_RECONNECT_FAILS)
            return
        assert isinstance(event, Reconnected)  # the only other kind waited for
        self._judge_return(rec, within, prompted, port_back, attempts, event)
        for line in errors:
            rec.fail(f"Error logged during reconnection: {line}", HINT_RECONNECT_FAILS)
        if await client.ping():
            rec.note("Heartbeat answered after reconnecting")

    @staticmethod
    def _judge_return(rec: Recorder, within: float, prompted: float, port_back: float | None,
                      attempts: list[ReconnectFailedAttempt | Reconnecting], event: Reconnected) -> None:
        port_at = event.mono if port_back is None else min(port_back, event.mono)
        starting = [e for e in attempts
                    if isinstance(e, ReconnectFailedAttempt) and e.gateway_starting and e.mono >= port_at]
        # The API was not ready when the last "still starting" try began, so it became ready after
        # that: timing from there is an upper bound of how long the client took (never flattering).
        api_at = port_at
        if starting:
            began = [e.mono for e in attempts if isinstance(e, Reconnecting) and e.mono <= starting[-1].mono]
            api_at = max(port_at, began[-1] if began else starting[-1].mono)
        took = event.mono - api_at
        rec.metric(PROMPT_TO_RECONNECTED, event.mono - prompted, "s")
        rec.metric(PORT_BACK_TO_RECONNECTED, event.mono - port_at, "s")
        rec.metric(BACK_TO_RECONNECTED, took, "s")
        rec.metric(ATTEMPTS, float(event.attempts), "")
        rec.metric(DOWNTIME, event.downtime, "s")
        if port_back is not None:
            rec.note(f"Gateway port open again {port_at - prompted:.1f} s after the prompt to start it")
        if starting:
            rec.note(f"{len(starting)} tr{'y' if len(starting) == 1 else 'ies'} over "
                     f"{starting[-1].mono - port_at:.1f} s found the Gateway still starting (port open, API not ready "
                     "yet): expected, not an error")
        rec.note(f"Reconnected at most {took:.2f} s after the Gateway was back with its API ready (port polled every "
                 f"{PORT_POLL * 1000:.0f} ms), "
                 f"{event.mono - prompted:.1f} s after the prompt, after {event.downtime:.1f} s down")
        if took > within:
            rec.fail(f"Reconnected only {took:.1f} s after the Gateway's API was back (limit {within:g} s)",
                     HINT_RECONNECT_FAILS)
        for e in attempts:
            if isinstance(e, ReconnectFailedAttempt) and not e.gateway_starting and e.mono >= port_at:
                rec.fail(f"Reconnect attempt {e.attempt} failed after the Gateway was back: {e.error}",
                         HINT_RECONNECT_FAILS)
