"""Step 3: stay connected for the soak duration with a heartbeat, and say so as it goes.

Everything counted comes from the client's own events, so the finding, the stored events and
the metrics agree: missed heartbeats are its Heartbeat(rtt=None) events, drops its Disconnected
events, link outages its 1100/2110 notices and how they ended (1101/1102).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from dataclasses import dataclass
from datetime import datetime

from bot.checks.base import Check, CheckContext, Recorder, mark, passed
from bot.ibkr.errors import HINT_CONNECTION_DROPS, NotConnected, PingTimeout
from bot.ibkr.events import (
    ClientEvent,
    Disconnected,
    DisconnectReason,
    GatewayNotice,
    Heartbeat,
    NoticeKind,
    Reconnected,
    ReconnectGaveUp,
)
from bot.stats import percentile
from storage.models import CheckRecord, RunRecord

SEED_SOAK_SECONDS = 600  # "Connection stays stable for 10+ minutes"
# Metric names (durations in s, RTTs in ms, the rest counts).
DURATION, HEARTBEATS, MISSED = "duration", "heartbeats", "missed_heartbeats"
DROPS, LINK_OUTAGES = "drops", "link_outages"
RTT_MIN, RTT_MEDIAN, RTT_P95, RTT_MAX = "rtt_min", "rtt_median", "rtt_p95", "rtt_max"
# What a person needs to see of the connection's life during a soak: the drops and what followed.
CONNECTION_EVENTS = ("disconnected", "reconnected", "reconnect_gave_up")

HINT_LINK = ("Check the Gateway machine's internet connection",
             "A nightly IBKR server reset causes this: keep soaks out of the reset window")


@dataclass
class Outage:
    """A stretch with something down: the IB link (1100/2110) or one data farm."""

    what: str
    start: GatewayNotice
    end: GatewayNotice | None = None

    def line(self, now: float) -> str:
        until = self.end.mono if self.end else now
        text = f"{self.what} at {self.start.at:%H:%M:%S} UTC ({self.start.code}) for {until - self.start.mono:.1f} s"
        if self.end is None:
            return text + "; not restored by the end of the soak"
        return text + f"; came back with {self.end.meaning or self.end.code}"


class SoakEvents:
    """What one client reported during the soak."""

    def __init__(self) -> None:
        self.rtts: list[float] = []
        self.missed = 0
        self.drops: list[Disconnected] = []
        self.reconnects: list[Reconnected] = []
        self.gave_up: list[ReconnectGaveUp] = []
        self.links: list[Outage] = []
        self.farms: list[Outage] = []

    def __call__(self, event: ClientEvent) -> None:
        match event:
            case Heartbeat(rtt=None):
                self.missed += 1
            case Heartbeat(rtt=float() as rtt):
                self.rtts.append(rtt)
            case Disconnected() if event.reason is not DisconnectReason.LOCAL:
                self.drops.append(event)
            case Reconnected():
                self.reconnects.append(event)
            case ReconnectGaveUp():
                self.gave_up.append(event)
            case GatewayNotice():
                self._notice(event)

    def _notice(self, n: GatewayNotice) -> None:
        if n.notice.is_link_down:
            if not self.links or self.links[-1].end is not None:
                self.links.append(Outage("IB link lost", n))
        elif n.notice.is_link_back:
            if self.links and self.links[-1].end is None:
                self.links[-1].end = n
        elif n.notice is NoticeKind.FARM_BROKEN:
            if not any(o.end is None and o.what.endswith(f"'{n.farm}' broken") for o in self.farms):
                self.farms.append(Outage(f"Data farm '{n.farm}' broken", n))
        elif n.notice is NoticeKind.FARM_OK:
            for o in self.farms:
                if o.end is None and o.what.endswith(f"'{n.farm}' broken"):
                    o.end = n

    @property
    def troubled(self) -> bool:
        return bool(self.drops or self.missed or self.links or self.gave_up)


@dataclass(frozen=True)
class SoakOptions:
    duration: float | None = None  # seconds; None: the config's soak.duration


class SoakCheck(Check):
    name = "soak"
    options_type = SoakOptions
    section = "Connection Test"
    options: SoakOptions

    async def execute(self, ctx: CheckContext, rec: Recorder) -> None:
        duration = self.options.duration or ctx.config.soak.duration
        interval = ctx.config.soak.heartbeat_interval
        report_every = ctx.config.soak.progress_interval
        seen = SoakEvents()
        client = ctx.client()
        client.events.subscribe(seen)
        client.events.subscribe(lambda e: rec.sample(e.rtt) if isinstance(e, Heartbeat) else None)
        await client.connect()
        try:
            deadline = time.monotonic() + duration
            next_report = time.monotonic()
            # A client that gave up reconnecting ends the soak: waiting out the rest proves nothing.
            while (left := deadline - time.monotonic()) > 0 and not seen.gave_up:
                beat = time.monotonic()
                rtt: float | None = None
                # A missed beat is counted from the client's Heartbeat event; a beat while disconnected
                # is not a heartbeat at all (the drop is counted instead).
                with contextlib.suppress(PingTimeout, NotConnected):
                    rtt = await client.ping(timeout=min(ctx.gateway.heartbeat_timeout, interval))
                if time.monotonic() >= next_report:
                    next_report += report_every
                    rec.progress(self._line(rec.elapsed, duration, rtt, seen),
                                 fraction=min(rec.elapsed / duration, 1.0), remaining=max(left, 0.0), last_rtt=rtt)
                await asyncio.sleep(max(0.0, min(beat + interval, deadline) - time.monotonic()))
        finally:
            await client.disconnect()
        self._judge(rec, duration, seen)

    @staticmethod
    def _line(elapsed: float, duration: float, rtt: float | None, seen: SoakEvents) -> str:
        rtt_text = f"{rtt * 1000:.1f} ms" if rtt is not None else "none"
        state = "Still connected" if not seen.troubled else "Running, with trouble,"
        return (f"{state} after {elapsed:.0f} s of {duration:.0f} s; last RTT {rtt_text}; "
                f"missed {seen.missed}, drops {len(seen.drops)}, IB link lost {len(seen.links)}")

    @staticmethod
    def _judge(rec: Recorder, duration: float, seen: SoakEvents) -> None:
        now = time.monotonic()
        ran = min(rec.elapsed, duration)
        rec.metric(DURATION, ran, "s")
        rec.metric(HEARTBEATS, float(len(seen.rtts) + seen.missed), "")
        rec.metric(MISSED, float(seen.missed), "")
        rec.metric(DROPS, float(len(seen.drops)), "")
        rec.metric(LINK_OUTAGES, float(len(seen.links)), "")
        rtts = seen.rtts
        figures = ""
        if rtts:
            median, p95 = statistics.median(rtts) * 1000, percentile(rtts, 0.95) * 1000
            rec.metric(RTT_MIN, min(rtts) * 1000, "ms")
            rec.metric(RTT_MEDIAN, median, "ms")
            rec.metric(RTT_P95, p95, "ms")
            rec.metric(RTT_MAX, max(rtts) * 1000, "ms")
            figures = f": {len(rtts)} heartbeats answered, RTT median {median:.1f} ms, p95 {p95:.1f} ms"
        if not seen.troubled:
            rec.note(f"Stayed connected for {ran:.0f} s{figures}")
        elif figures:
            rec.note(f"Soaked {ran:.0f} s{figures}")
        for d in seen.drops:
            rec.fail(f"Connection dropped at {d.at:%H:%M:%S} UTC ({d.reason})", HINT_CONNECTION_DROPS)
        for r in seen.reconnects:
            rec.note(f"Reconnected at {r.at:%H:%M:%S} UTC after {r.downtime:.1f} s down (attempt {r.attempts})")
        for g in seen.gave_up:
            rec.fail(f"Connection lost and not recovered: gave up after {g.attempts} reconnect attempt(s), "
                     f"{g.downtime:.0f} s down", HINT_CONNECTION_DROPS)
        if seen.missed:
            rec.fail(f"{seen.missed} heartbeat(s) went unanswered", HINT_CONNECTION_DROPS)
        for o in seen.links:
            rec.fail(o.line(now), HINT_LINK)
        for o in seen.farms:
            rec.warn(o.line(now))

    @classmethod
    def figures(cls, check: CheckRecord) -> str:
        m = {x.name: x.value for x in check.metrics}
        if DURATION not in m:
            return ""
        text = f"{m[DURATION]:.0f} s, {m.get(HEARTBEATS, 0):.0f} heartbeats"
        if RTT_MEDIAN in m:
            text += f", RTT median {m[RTT_MEDIAN]:.1f} ms, p95 {m[RTT_P95]:.1f} ms, max {m[RTT_MAX]:.1f} ms"
        return text + f", {m.get(MISSED, 0):.0f} missed, {m.get(DROPS, 0):.0f} drops"

    @classmethod
    def report_lines(cls, run: RunRecord, check: CheckRecord | None) -> list[str]:
        if check is None:
            return [f"- {mark(None)} Stayed connected for 10+ minutes"]
        seconds = check.metric(DURATION)
        if seconds is None:
            line = f"- {mark(False)} Stayed connected for 10+ minutes" + _unfinished(check)
        elif seconds >= SEED_SOAK_SECONDS:
            line = f"- {mark(passed(check))} Stayed connected for 10+ minutes ({seconds / 60:.1f} min)"
        else:
            line = (f"- {mark(passed(check))} Stayed connected for {seconds:.0f} s "
                    f"(shortened soak; the checklist asks for 10+ minutes)")
        return [line, *_connection_events(run, check)]

    @classmethod
    def recommendations(cls, run: RunRecord, check: CheckRecord | None) -> list[str]:
        seconds = None if check is None else check.metric(DURATION)
        if seconds is not None and seconds < SEED_SOAK_SECONDS:
            return ["Run the full 10-minute soak (`gwbot check soak`) before relying on this Gateway"]
        return []


def _unfinished(soak: CheckRecord) -> str:
    """What a soak that never stored its result did get to measure: its samples, kept as taken."""
    if soak.ended_at is None:
        return ""
    text = f": {soak.status} after {(soak.ended_at - soak.started_at).total_seconds():.0f} s"
    if soak.series:
        rtts = [rtt * 1000 for _, rtt in soak.series if rtt is not None]
        text += f"; {len(soak.series)} heartbeats stored"
        if rtts:
            text += f" (RTT median {statistics.median(rtts):.1f} ms, max {max(rtts):.1f} ms)"
        text += f", {len(soak.series) - len(rtts)} missed"
    return text


def _connection_events(run: RunRecord, check: CheckRecord) -> list[str]:
    def during(at: datetime) -> bool:
        return check.started_at <= at and (check.ended_at is None or at <= check.ended_at)

    # The client's own goodbye at the end of the check is not a drop.
    return [f"  - {e.at:%H:%M:%S} UTC: {e.message}" for e in run.events
            if e.kind in CONNECTION_EVENTS and during(e.at) and f"({DisconnectReason.LOCAL})" not in e.message]
