"""Step 3: stay connected for the soak duration with a heartbeat, and say so as it goes."""

from __future__ import annotations

import asyncio
import statistics
import time

from bot.checks.base import Check, CheckContext, Recorder
from bot.ibkr.errors import HINT_CONNECTION_DROPS, NotConnected, PingTimeout
from bot.ibkr.events import ClientEvent, Disconnected, DisconnectReason, ReconnectGaveUp


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; ``values`` need not be sorted."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


class SoakCheck(Check):
    name = "soak"

    def __init__(self, duration: float | None = None) -> None:
        self.duration = duration

    async def execute(self, ctx: CheckContext, rec: Recorder) -> None:
        duration = self.duration or ctx.config.soak.duration
        interval = ctx.config.soak.heartbeat_interval
        report_every = ctx.config.soak.progress_interval
        drops: list[Disconnected] = []
        gave_up: list[ReconnectGaveUp] = []

        def on_event(event: ClientEvent) -> None:
            if isinstance(event, Disconnected) and event.reason is not DisconnectReason.LOCAL:
                drops.append(event)
            elif isinstance(event, ReconnectGaveUp):
                gave_up.append(event)

        client = ctx.client()
        client.events.subscribe(on_event)
        await client.connect()
        rtts: list[float] = []
        missed = 0
        try:
            deadline = time.monotonic() + duration
            next_report = time.monotonic()
            # A client that gave up reconnecting ends the soak: waiting out the rest proves nothing.
            while (left := deadline - time.monotonic()) > 0 and not gave_up:
                beat = time.monotonic()
                rtt = await self._beat(client, min(ctx.gateway.heartbeat_timeout, interval))
                rec.sample(rtt)
                if rtt is None:
                    missed += 1
                else:
                    rtts.append(rtt)
                if time.monotonic() >= next_report:
                    next_report += report_every
                    rec.progress(self._line(rec.elapsed, duration, rtt, missed, len(drops)),
                                 fraction=min(rec.elapsed / duration, 1.0), remaining=max(left, 0.0), last_rtt=rtt)
                await asyncio.sleep(max(0.0, min(beat + interval, deadline) - time.monotonic()))
        finally:
            await client.disconnect()
        self._judge(rec, duration, rtts, missed, drops)
        for event in gave_up:
            rec.fail(f"Connection lost and not recovered: gave up after {event.attempts} reconnect attempts, "
                     f"{rec.elapsed:.0f} s into the soak", HINT_CONNECTION_DROPS)

    @staticmethod
    async def _beat(client, timeout: float) -> float | None:
        try:
            return await client.ping(timeout=timeout)
        except (PingTimeout, NotConnected):
            return None

    @staticmethod
    def _line(elapsed: float, duration: float, rtt: float | None, missed: int, drops: int) -> str:
        rtt_text = f"{rtt * 1000:.1f} ms" if rtt is not None else "missed"
        return (f"Still connected after {elapsed:.0f} s of {duration:.0f} s; last RTT {rtt_text}; "
                f"missed {missed}, drops {drops}")

    @staticmethod
    def _judge(rec: Recorder, duration: float, rtts: list[float], missed: int, drops: list[Disconnected]) -> None:
        rec.metric("duration", duration, "s")
        rec.metric("heartbeats", float(len(rtts) + missed), "")
        rec.metric("missed_heartbeats", float(missed), "")
        rec.metric("drops", float(len(drops)), "")
        if rtts:
            rec.metric("rtt_min", min(rtts) * 1000, "ms")
            rec.metric("rtt_median", statistics.median(rtts) * 1000, "ms")
            rec.metric("rtt_p95", percentile(rtts, 0.95) * 1000, "ms")
            rec.metric("rtt_max", max(rtts) * 1000, "ms")
            rec.note(f"Stayed connected for {duration:.0f} s: {len(rtts)} heartbeats, RTT median "
                     f"{statistics.median(rtts) * 1000:.1f} ms, p95 {percentile(rtts, 0.95) * 1000:.1f} ms")
        for d in drops:
            rec.fail(f"Connection dropped at {d.at:%H:%M:%S} UTC ({d.reason})", HINT_CONNECTION_DROPS)
        if missed:
            rec.fail(f"{missed} heartbeat(s) went unanswered", HINT_CONNECTION_DROPS)
