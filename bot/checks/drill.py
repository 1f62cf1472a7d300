"""Step 4 without a person: IBC restarts the Gateway (RESTART keeps the session: no 2FA) and the
drill times every stage of the way back, from IBC's answer to the check's own client reconnected.

Each stage's time is its earliest evidence: the port and the handshake from knocks every
``PORT_POLL`` s, the API's readiness from an observer client of its own (ClientRole.DRILL), the
drop and the reconnect from the check's client. A later stage of the return proves the earlier
ones came no later, so a client quicker than the knocks does not make the timeline run backwards.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from ib_async.client import Client as ApiClient

from bot.checks.base import Check, CheckContext, CheckSkipped, Recorder, mark, passed
from bot.checks.disconnect import client_errors
from bot.client_ids import ClientRole
from bot.config import ChecksConfig, GatewayConfig
from bot.ibkr.client import IBKRClient, port_accepts
from bot.ibkr.connecting import handshake_answered
from bot.ibkr.errors import HINT_GATEWAY_NOT_RUNNING, HINT_RECONNECT_FAILS, GatewayError
from bot.ibkr.events import ClientEvent, Disconnected, GatewayNotice, NoticeKind, Reconnected, ReconnectGaveUp
from bot.ibkr.ibc import IbcClient, IbcError, IbcRestartMissed
from storage.models import CheckRecord, RunRecord

PORT_POLL = 0.05  # how often the port and the handshake are knocked on: the timeline's resolution
OBSERVER_READY_WAIT = 0.5  # the observer's tries at a Gateway still logging in: API ready seen this late at most
LINK_WAIT = 1.0  # after the reconnect, how long the IB link / farm notices may still take to show
VERSIONS = b"v%d..%d" % (ApiClient.MinClientVersion, ApiClient.MaxClientVersion)
# Metric names (seconds): each stage's is METRIC_PREFIX + its value, after IBC accepted RESTART.
METRIC_PREFIX = "stage_"
OUTAGE, TOTAL, READY_TO_RECONNECTED = "outage", "restart_to_reconnected", "ready_to_reconnected"
IBC_MINUTE, LAST_STAGE = "ibc_minute", "last_stage"  # facts
COMPARE_WITH = 8  # a drill's outage is compared with this Gateway's last this many
HINT_IBC = ("Look at IBC's log and the Gateway's own log for why the restart did not complete",)


class Stage(StrEnum):
    """A drill's stages, in the order a restart goes through them."""

    ACCEPTED = "accepted"
    DROPPED = "dropped"
    PORT_CLOSED = "port_closed"
    PORT_OPEN = "port_open"
    HANDSHAKE = "handshake"
    API_READY = "api_ready"
    LINK_OK = "link_ok"
    RECONNECTED = "reconnected"

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def metric(self) -> str:
        return METRIC_PREFIX + self.value


_LABELS = {
    Stage.ACCEPTED: "IBC accepted RESTART", Stage.DROPPED: "API connection dropped",
    Stage.PORT_CLOSED: "port closed", Stage.PORT_OPEN: "port open", Stage.HANDSHAKE: "handshake answered",
    Stage.API_READY: "API ready (accounts, next order id)", Stage.LINK_OK: "IB link and farms OK",
    Stage.RECONNECTED: "the check's client reconnected",
}
# The link and farm notices come only if the Gateway sends them, with the API's start-up (even a
# moment before the observer's connect returns): only their presence is told, not their order.
ORDERED = tuple(s for s in Stage if s is not Stage.LINK_OK)
# The way back: reaching one proves the ones before it.
RETURN = (Stage.PORT_OPEN, Stage.HANDSHAKE, Stage.API_READY, Stage.RECONNECTED)
# Going down: the Gateway resets its clients and closes its port at once, in either order.
DOWN = (Stage.DROPPED, Stage.PORT_CLOSED)


@dataclass(frozen=True)
class DrillOptions:
    """A drill's allowances; None takes the config's (checks.drill_down_within, checks.drill_back_within)."""

    down_within: float | None = None  # RESTART accepted, the Gateway down by then (IBC names the next minute)
    back_within: float | None = None  # down, the check's client back by then

    def resolved(self, checks: ChecksConfig) -> DrillOptions:
        return DrillOptions(checks.drill_down_within if self.down_within is None else self.down_within,
                            checks.drill_back_within if self.back_within is None else self.back_within)


class Timeline:
    """When each stage was reached (time.monotonic()), the earliest evidence of each."""

    def __init__(self) -> None:
        self.at: dict[Stage, float] = {}
        self.gave_up = ""  # the client's auto-reconnect gave up: its last error
        self._changed = asyncio.Event()

    def hit(self, stage: Stage, mono: float | None = None) -> None:
        mono = time.monotonic() if mono is None else mono
        self.at[stage] = min(mono, self.at.get(stage, mono))
        later = float("inf")
        for s in reversed(RETURN):
            if s in self.at:
                later = self.at[s] = min(self.at[s], later)
        self._changed.set()

    def wake(self) -> None:
        self._changed.set()

    async def wait(self, stages: tuple[Stage, ...], timeout: float) -> bool:
        """Whether one of ``stages`` was reached within ``timeout`` s (returns early when the client gave up)."""
        try:
            async with asyncio.timeout(timeout):
                while not any(s in self.at for s in stages) and not self.gave_up:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return False
        return True

    def last(self) -> Stage:
        return max(self.at, key=list(Stage).index) if self.at else Stage.ACCEPTED

    def out_of_order(self) -> list[str]:
        seen = [s for s in ORDERED if s in self.at]
        return [f"{b.label} came before {a.label}" for a, b in itertools.pairwise(seen)
                if self.at[b] < self.at[a] and not (a in DOWN and b in DOWN)]


async def _knock_until(probe: Callable[[], Awaitable[bool]], want: bool) -> None:
    while True:
        if await probe() is want:
            return
        await asyncio.sleep(PORT_POLL)


def timeline_lines(check: CheckRecord) -> list[str]:
    """The stored timeline, one line per stage reached, in order of time."""
    stages = sorted(((v, s) for s in Stage if (v := check.metric(s.metric)) is not None), key=lambda p: p[0])
    minute = check.facts.get(IBC_MINUTE)
    return [f"  - {at:7.2f} s  {stage.label}" + (f" (restart at {minute})" if stage is Stage.ACCEPTED and minute
                                                  else "") for at, stage in stages]


def compared(this: float, earlier: Sequence[float]) -> str:
    """A drill's outage (down -> reconnected) beside this Gateway's earlier drills' (newest first)."""
    def s(x: float) -> str:
        return f"{x:.0f} s" if x >= 10 else f"{x:.1f} s"  # a real restart: whole seconds; the simulator's: tenths
    if not earlier:
        return f"this drill {s(this)}; the first drill on this Gateway (down -> reconnected)"
    n = len(earlier)
    return (f"this drill {s(this)}; last {n} drill{'s' if n > 1 else ''} median {s(statistics.median(earlier))}, "
            f"worst {s(max(earlier))} (down -> reconnected)")


class DrillCheck(Check):
    name = "drill"
    options_type = DrillOptions
    section = "Auto-Reconnect Test"
    stands_in_for = "reconnect"  # in the checklist, on a Gateway with IBC configured
    key_figures = (TOTAL, "down {outage:.1f} s; reconnected {ready_to_reconnected:.2f} s after the API was ready, "
                          "{restart_to_reconnected:.1f} s after RESTART")

    @classmethod
    def applies(cls, gateway: GatewayConfig) -> bool:
        return gateway.ibc is not None

    @classmethod
    def report_lines(cls, run: RunRecord, check: CheckRecord | None) -> list[str]:
        if check is None:
            return []
        within = float(run.config.get("checks", {}).get("reconnect_within", 30))
        back = check.metric(READY_TO_RECONNECTED)
        return [
            f"- {mark(check.metric(Stage.ACCEPTED.metric) is not None)} Gateway restarted through IBC (no 2FA)",
            f"- {mark(check.metric(Stage.DROPPED.metric) is not None)} Detected Gateway shutdown",
            f"- {mark(back is not None and back <= within)} Reconnected within {within:g} seconds"
            + (f" ({back:.2f} s after the API was ready)" if back is not None else ""),
            f"- {mark(passed(check) if back is not None else False)} Every stage in order, no errors during "
            "reconnection",
            "- Stage timeline (seconds after IBC accepted RESTART):",
            *timeline_lines(check),
        ]

    async def execute(self, ctx: CheckContext, rec: Recorder) -> None:
        gw = ctx.gateway
        if gw.ibc is None:
            raise CheckSkipped(f"drill needs IBC's command server: configure ibc: {{port: 7462}} under Gateway "
                               f"'{gw.name}' (CommandServerPort in IBC's config.ini), or use reconnect")
        assert gw.ibc.host is not None  # config fills it with the Gateway's host
        allow = self.options.resolved(ctx.config.checks)
        timeline = Timeline()
        client = ctx.client()
        client.events.subscribe(lambda e: self._on_client_event(timeline, e))
        await client.connect()
        observer: asyncio.Task[None] | None = None
        try:
            with client_errors(client) as errors:
                ibc = IbcClient(gw.ibc.host, gw.ibc.port)
                rec.progress(f"Connected. Asking IBC at {ibc.address} to RESTART the Gateway")
                try:
                    accepted = await ibc.restart()
                    timeline.hit(Stage.ACCEPTED)
                    minute = f"{accepted.at:%H:%M}" if accepted.at is not None else "at once"
                    rec.facts[IBC_MINUTE] = minute
                    rec.note(f"IBC accepted RESTART: {' / '.join(accepted.replies)}")
                    rec.progress(f"IBC accepted RESTART (restart at {minute}); waiting for the Gateway to go down")
                    observer = asyncio.create_task(self._observe(ctx, timeline), name="drill-observer")
                    if not await timeline.wait(DOWN, allow.down_within):
                        raise IbcRestartMissed(ibc.address, accepted, allow.down_within)
                except IbcError as e:
                    rec.fail(str(e), HINT_IBC)
                    return
                rec.progress("Gateway down; timing its return")
                if await timeline.wait((Stage.RECONNECTED,), allow.back_within) and not timeline.gave_up:
                    await timeline.wait((Stage.LINK_OK,), LINK_WAIT)
            self._judge(ctx, rec, timeline, errors, allow)
        finally:
            if observer is not None:
                observer.cancel()
                await asyncio.gather(observer, return_exceptions=True)
            await client.disconnect()
            rec.facts[LAST_STAGE] = timeline.last().label
            if (start := timeline.at.get(Stage.ACCEPTED)) is not None:
                for stage, at in sorted(timeline.at.items(), key=lambda p: list(Stage).index(p[0])):
                    rec.metric(stage.metric, at - start, "s")

    @staticmethod
    def _on_client_event(timeline: Timeline, event: ClientEvent) -> None:
        if Stage.ACCEPTED not in timeline.at:
            return  # before RESTART: nothing of the drill's
        match event:
            case Disconnected():
                timeline.hit(Stage.DROPPED, event.mono)
            case Reconnected():
                timeline.hit(Stage.API_READY, event.mono)
                timeline.hit(Stage.RECONNECTED, event.mono)
            case GatewayNotice(notice=NoticeKind.FARM_OK | NoticeKind.LINK_RESTORED | NoticeKind.LINK_RESTORED_DATA_LOST
                               ) if Stage.DROPPED in timeline.at:
                timeline.hit(Stage.LINK_OK, event.mono)
            case ReconnectGaveUp():
                timeline.gave_up = event.last_error
                timeline.wake()

    async def _observe(self, ctx: CheckContext, timeline: Timeline) -> None:
        """Knock until the port closes and opens again, then until the handshake is answered, then
        connect an observer client until the API is ready; it stays connected to hear the farms."""
        gw = ctx.gateway
        knock = max(PORT_POLL * 4, 1.0)
        await _knock_until(lambda: port_accepts(gw.host, gw.port, knock), False)
        timeline.hit(Stage.PORT_CLOSED)
        await _knock_until(lambda: port_accepts(gw.host, gw.port, knock), True)
        timeline.hit(Stage.PORT_OPEN)
        await _knock_until(lambda: handshake_answered(gw.host, gw.port, knock, VERSIONS), True)
        timeline.hit(Stage.HANDSHAKE)
        observer = IBKRClient.from_config(gw, ClientRole.DRILL, **(ctx.client_options | {
            "reconnect": None, "ready_wait": OBSERVER_READY_WAIT}))
        observer.events.subscribe(
            lambda e: timeline.hit(Stage.LINK_OK, e.mono) if isinstance(e, GatewayNotice) and e.notice in (
                NoticeKind.FARM_OK, NoticeKind.LINK_RESTORED, NoticeKind.LINK_RESTORED_DATA_LOST) else None)
        try:
            while True:
                try:
                    await observer.connect(retrying=True)
                except GatewayError:
                    await asyncio.sleep(PORT_POLL)
                    continue
                timeline.hit(Stage.API_READY)
                await asyncio.Event().wait()  # until the drill is over
        finally:
            await observer.disconnect()

    def _judge(self, ctx: CheckContext, rec: Recorder, timeline: Timeline, errors: list[str],
               allow: DrillOptions) -> None:
        at = timeline.at
        if Stage.RECONNECTED not in at:
            last = timeline.last()
            why = (f"the client gave up reconnecting ({timeline.gave_up})" if timeline.gave_up
                   else f"not back within {allow.back_within:g} s of going down")
            rec.fail(f"The Gateway did not come back: {why}; the last stage reached was '{last.label}', "
                     f"{at[last] - at[Stage.ACCEPTED]:.1f} s after RESTART", HINT_GATEWAY_NOT_RUNNING + HINT_IBC)
            return
        back = at[Stage.RECONNECTED]
        within = ctx.config.checks.reconnect_within
        down = min(at[s] for s in DOWN if s in at)
        rec.metric(OUTAGE, back - down, "s")
        rec.metric(TOTAL, back - at[Stage.ACCEPTED], "s")
        rec.metric(READY_TO_RECONNECTED, back - at[Stage.API_READY], "s")
        missing = [s.label for s in ORDERED if s not in at]
        if missing:
            rec.fail(f"Stage(s) never seen: {', '.join(missing)}", HINT_IBC)
        for text in timeline.out_of_order():
            rec.fail(f"Out of order: {text}", HINT_IBC)
        took = back - at[Stage.API_READY]
        rec.note(f"Reconnected at most {took:.2f} s after the Gateway's API was ready, {back - down:.1f} s after it "
                 f"went down, {back - at[Stage.ACCEPTED]:.1f} s after IBC accepted RESTART")
        if Stage.LINK_OK not in at:
            rec.note("No IB link / data farm notice was seen after the restart")
        if took > within:
            rec.fail(f"Reconnected only {took:.1f} s after the Gateway's API was ready (limit {within:g} s)",
                     HINT_RECONNECT_FAILS)
        for line in errors:
            rec.fail(f"Error logged during the drill: {line}", HINT_RECONNECT_FAILS)
