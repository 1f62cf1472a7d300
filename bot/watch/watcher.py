"""One watcher per configured Gateway: its own connection, reconnecting forever, feeding the engine.

Each watcher holds its OWN ``IBKRClient`` (its own client id, ``ClientRole.WATCH``) with the
heartbeat on and the client's bounded auto-reconnect off: the watcher reconnects itself, forever,
so that every failed attempt arrives typed (which layer, why) and nothing can give up silently.
While the port refuses it only knocks (a TCP connect every ``knock_interval``), so a Gateway
coming back is seen within that interval without loading it with API handshakes.

Two tasks per Gateway: the connector (connect, wait for the drop, again) and the processor
(client events and failures -> ``GatewayState`` + engine -> alerts to the sink, incidents to
storage); one Gateway's trouble never waits on another's.

The IB link is unknown after a connect until the Gateway says otherwise: a 1100 heard with the
connection keeps the Gateway down, and only 1101/1102 (or farms OK after 2110) bring it up. What
the engine must remember across a restart of gwbot (memory.py) is stored whenever it changes and
taken up again on start.

Everything runs with ``watch_gateway`` set, so a check can tell the watcher's log records from
its own (``from_watch()`` / ``WatchLogFilter``); the watcher's own lines go to ``gwbot.watch.<name>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from bot.client_ids import ClientRole
from bot.config import Config, GatewayConfig, WatchConfig
from bot.health import Health
from bot.ibkr import errors as ib
from bot.ibkr.client import ConnectionState, IBKRClient, wait_for_port
from bot.ibkr.events import ClientEvent, Connected, Disconnected, DisconnectReason, GatewayNotice, Heartbeat, NoticeKind
from bot.journal import current_run
from bot.watch.alerts import Alert
from bot.watch.clock import SYSTEM_CLOCK, Clock
from bot.watch.engine import Engine
from bot.watch.memory import from_json, to_json
from bot.watch.state import (
    CameBack,
    DownCause,
    FarmState,
    GatewayState,
    Phase,
    Recovery,
    RecoveryHow,
    WentDown,
    gateway_ref,
)
from storage import IncidentStore

# Set in every watcher task (and so in ib_async's callbacks on its sockets): whose records these are.
watch_gateway: contextvars.ContextVar[str | None] = contextvars.ContextVar("watch_gateway", default=None)

COVERAGE_EVERY = 60.0  # seconds between "still watching" marks in storage (uptime's monitored time)


def from_watch() -> bool:
    """True inside the watch's tasks: a check must not count what happens here as its own."""
    return watch_gateway.get() is not None


class WatchLogFilter(logging.Filter):
    """Drops log records emitted by the watch (its client, ib_async on its sockets)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not from_watch()


# Where alerts go (the outbox's enqueue). Awaited once per alert, in order, per Gateway.
AlertSink = Callable[[Alert], Awaitable[None]]


def utc_now() -> datetime:
    return SYSTEM_CLOCK.wall()


def health_from_state(gw: GatewayConfig, state: GatewayState) -> Health:
    """/status's existing ``Health`` answered from the watch at once, with no connection of its own."""
    up = state.phase is Phase.UP
    error = None if up or state.phase is Phase.STARTING else \
        f"{state.cause.now_words if state.cause else 'down'} since {state.since:%H:%M:%S} UTC" + \
        (f" ({state.detail})" if state.detail else "")
    return Health(gw, None, error, None if up else state.failed, state.server_version if up else None,
                  state.accounts if up else (), state.since if up else None,
                  state.link_ok if up else False if state.failed is ib.Layer.IB_LINK else None,
                  all(f.ok for f in state.farms) if up and state.farms else None, state.last_rtt, "watch")


# A failed connection attempt in the watch's words (the layer it stopped at is the error's own).
_CAUSES = {
    ib.GatewayRefused: DownCause.REFUSED,
    ib.ConnectTimeout: DownCause.UNREACHABLE,
    ib.HostUnresolvable: DownCause.UNREACHABLE,
    ib.HandshakeTimeout: DownCause.NO_HANDSHAKE,
    ib.NotAnApiPort: DownCause.NO_HANDSHAKE,
    ib.ConnectionRejected: DownCause.REJECTED,
    ib.GatewayClosedConnection: DownCause.CLOSED,
    ib.LiveAccountRefused: DownCause.LIVE_ACCOUNT,
    ib.ApiNotReady: DownCause.NOT_LOGGED_IN,
    ib.ClientIdInUse: DownCause.CLIENT_ID,
    ib.PingTimeout: DownCause.FROZEN,
}


def classify(err: ib.GatewayError) -> tuple[DownCause, ib.Layer]:
    """A failed connection attempt in the watch's words, and the layer it stopped at."""
    return next((cause for kind, cause in _CAUSES.items() if isinstance(err, kind)), DownCause.OTHER), err.layer


_DROPS = {
    DisconnectReason.PEER_CLOSED: (DownCause.CLOSED, ib.Layer.TCP_PORT),
    DisconnectReason.RESET: (DownCause.RESET, ib.Layer.TCP_PORT),
    DisconnectReason.HEARTBEAT_TIMEOUT: (DownCause.FROZEN, ib.Layer.API_READY),
    DisconnectReason.OTHER: (DownCause.CLOSED, ib.Layer.TCP_PORT),
}


@dataclass(frozen=True)
class _Failed:
    at: datetime
    error: ib.GatewayError


@dataclass(frozen=True)
class _Connected:
    event: Connected
    attempts: int  # the try that made it, counting from the drop (or from start)


class GatewayWatcher:
    def __init__(self, gw: GatewayConfig, settings: WatchConfig, sink: AlertSink, *,
                 store: IncidentStore | None = None, clock: Clock = SYSTEM_CLOCK,
                 client_options: dict[str, Any] | None = None, knock_interval: float = 0.25,
                 max_pause: float = 5.0) -> None:
        self.gw = gw
        self.settings = settings
        self.sink = sink
        self.store = store
        self.clock = clock
        self.knock_interval = knock_interval
        self.max_pause = max_pause
        self.log = logging.getLogger(f"gwbot.watch.{gw.name}")
        self.engine = Engine(gw.name, settings, clock)
        # The watcher reconnects by itself (forever), so the client's own reconnect is off.
        self.client = IBKRClient.from_config(gw, ClientRole.WATCH, **(client_options or {}), reconnect=None)
        # The live state /status shows; a new frozen object after every change, so a reader never sees half of one.
        self.state = GatewayState()
        # The Gateway's last word on the current connection about its IB link (1100/2110 down;
        # 1101/1102 or a farm OK up); None: it has said nothing yet.
        self._link_word: GatewayNotice | None = None
        self._api_up = False  # the current connection reached the API (its Connected was judged)
        self._inbox: asyncio.Queue[ClientEvent | _Connected | _Failed | list[Alert]] = asyncio.Queue()
        self._dropped = asyncio.Event()
        self._attempt = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._coverage: int | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._ctx = contextvars.copy_context()

    # ------------------------------------------------------- controlling
    async def start(self) -> None:
        if self._tasks:
            return
        self._ctx = ctx = contextvars.copy_context()
        ctx.run(watch_gateway.set, self.gw.name)
        ctx.run(current_run.set, None)  # never journalled into a check's run, whoever started us
        self._unsubscribe = self.client.events.subscribe(self._on_event)
        await self.resume()
        self._tasks = [
            asyncio.create_task(self._connector(), name=f"watch {self.gw.name} connector", context=ctx),
            asyncio.create_task(self._processor(), name=f"watch {self.gw.name} processor", context=ctx),
        ]
        self.log.info("watching %s:%s as client %s", self.gw.host, self.gw.port, self.client.client_id)

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        while not self._inbox.empty():  # alerts already decided (an ack's edit, a mute's end) still go out
            if isinstance(item := self._inbox.get_nowait(), list):
                await self.process(item)
        if self._unsubscribe is not None:
            self._unsubscribe()
        # In the watch's context too, so the client's goodbye lines are the watch's as well.
        await asyncio.create_task(self.client.disconnect(), name=f"watch {self.gw.name} disconnect", context=self._ctx)
        await self._persist()
        await self._seen()
        self.log.info("stopped watching")

    async def resume(self) -> None:
        """Take up what the last gwbot remembered (its open outage, acknowledgement, mute) and
        open a new watched span; the rest of what it left open ends at its last sign of life."""
        if self.store is None:
            return
        await self._recall(self.store)
        inc = self.engine.incident
        self._coverage = await self._stored(self.store.watch_started(self.gw.name, self.clock.wall(),
                                                                     keep=inc.key if inc else None))
        self._sync_state()

    async def _recall(self, store: IncidentStore) -> None:
        text = await self._stored(store.recall(self.gw.name))
        if text is None:
            return
        try:
            remembered = from_json(text, self.settings.schedule)
        except (ValueError, KeyError, TypeError) as e:
            self.log.error("the watch's stored memory is unreadable (%s); starting afresh", e)
            return
        self.engine = Engine(self.gw.name, self.settings, self.clock, remembered)

    def acknowledge(self, by: str, key: str | None = None) -> bool:
        """Someone took the current outage (the [Acknowledge] button). False: nothing (or a
        different outage) to take, or someone already did."""
        self._emit(self.engine.acknowledge(by, key))
        inc = self.engine.incident
        return inc is not None and inc.acked_by == by and (key is None or key == inc.key)

    def restarted(self, by: str, key: str) -> None:
        """Someone had IBC restart this Gateway from outage ``key``'s alert."""
        self._emit(self.engine.restarted(by, key))

    def farms_reconnected(self, by: str) -> None:
        """Someone had IBC reconnect this Gateway's data farms from a farm's alert."""
        self._emit(self.engine.farms_reconnected(by))

    def mute(self, until: datetime | None) -> None:
        self._emit(self.engine.mute(until))

    def suppress(self, reason: str, until: datetime | None) -> None:
        """A check stops or restarts this Gateway on purpose until ``until`` (None: done)."""
        self._emit(self.engine.suppress(reason, until))

    # ---------------------------------------------------------- internals
    def _emit(self, alerts: list[Alert]) -> None:
        # Even with nothing to send, this wakes the processor: the due times may have moved.
        self._inbox.put_nowait(alerts)
        self._sync_state()

    def _sync_state(self) -> None:
        self.state = replace(self.state, incident=self.engine.incident)

    def _on_event(self, event: ClientEvent) -> None:
        # Runs inline in the client's callbacks: only queue it; the processor judges.
        if isinstance(event, Disconnected) and event.reason is not DisconnectReason.LOCAL:
            self._dropped.set()
        # A connection is queued with the try that made it.
        self._inbox.put_nowait(_Connected(event, self._attempt) if isinstance(event, Connected) else event)

    async def _connector(self) -> None:
        """Connect, wait for the drop, reconnect: forever. Nothing here gives up."""
        failures = 0  # in a row, not counting a Gateway still logging in: it is on its way back
        while True:
            self._attempt += 1
            tried_at = time.monotonic()
            try:
                await self.client.connect(retrying=True)
            except ib.GatewayError as e:
                failures = 0 if isinstance(e, ib.ApiNotReady) else failures + 1
                self._inbox.put_nowait(_Failed(self.clock.wall(), e))
                await self._pause(e, failures, tried_at)
                continue
            except Exception:  # a bug or a surprise from ib_async: say so, and keep watching
                self.log.exception("connecting failed unexpectedly; retrying")
                await asyncio.sleep(self.max_pause)
                continue
            failures = 0
            self._attempt = 0
            await self._wait_for_drop()

    async def _wait_for_drop(self) -> None:
        while self.client.state is ConnectionState.CONNECTED:
            self._dropped.clear()
            # Re-check now and then: a drop that somehow emitted nothing must not park us forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await self._dropped.wait()

    async def _pause(self, err: ib.GatewayError, failures: int, tried_at: float) -> None:
        """Until the next attempt: knock while nothing listens; try again at the client's ready
        cadence while the Gateway is there but logging in; back off while it answers badly."""
        if isinstance(err, ib.GatewayRefused):
            # Polling is the only way to see a port open: no event in this process says so.
            await wait_for_port(self.gw.host, self.gw.port, self.knock_interval)
            return
        if isinstance(err, ib.ApiNotReady):
            # Its API answers no session opened before it was ready, so only a fresh try joins it.
            # Each try already waited the ready wait (about a second): go again at that steady
            # pace, never faster, and the Gateway is joined within about a second of being ready.
            await asyncio.sleep(max(0.0, tried_at + self.client.options.ready_wait - time.monotonic()))
            return
        await asyncio.sleep(min(self.max_pause, 0.5 * 2 ** min(failures - 1, 8)))

    async def _processor(self) -> None:
        last_seen = self.clock.mono()
        while True:
            due = self.engine.next_due()
            wait = COVERAGE_EVERY if due is None else min(COVERAGE_EVERY, due - self.clock.mono())
            item: ClientEvent | _Failed | list[Alert] | _Connected | None = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.0)):
                    item = await self._inbox.get()
            await self.process(item)
            if self.clock.mono() - last_seen >= COVERAGE_EVERY:
                last_seen = self.clock.mono()
                await self._seen()

    async def process(self, item: ClientEvent | _Failed | list[Alert] | _Connected | None) -> None:
        """Judge one item from the inbox (None: the clock moved), hand over its alerts, store what changed."""
        try:
            alerts = self._handle(item) if item is not None else self.engine.tick()
        except Exception:
            # A bug judging one event must not end the watch: say so, keep watching.
            self.log.exception("could not judge %r; watching on", item)
            alerts = []
        self._sync_state()
        for alert in alerts:
            await self._deliver(alert)
        await self._persist()

    def _handle(self, item: Any) -> list[Alert]:
        match item:
            case list():  # from acknowledge, mute or suppress
                return item + self.engine.tick()
            case _Connected():
                return self._connected(item)
            case _Failed():
                self._link_word, self._api_up = None, False
                cause, layer = classify(item.error)
                self.state = self.state.down(item.at, layer, cause, str(item.error))
                return self.engine.observe(WentDown(item.at, cause, layer, str(item.error)))
            case Disconnected() if item.reason is not DisconnectReason.LOCAL:
                self._link_word, self._api_up = None, False  # the next connection brings its own word
                cause, layer = _DROPS[item.reason]
                self.state = self.state.down(item.at, layer, cause, item.detail)
                return self.engine.observe(WentDown(item.at, cause, layer, item.detail))
            case GatewayNotice():
                return self._notice(item)
            case Heartbeat(rtt=rtt) if rtt is not None:
                self.state = replace(self.state, last_rtt=rtt)
        return self.engine.tick()

    def _connected(self, item: _Connected) -> list[Alert]:
        e = item.event
        self._api_up = True
        link = self._link_down()
        if link is not None:
            # The Gateway said "link lost" with this very connection: connected, but not up.
            self.state = replace(self.state.down(link.at, ib.Layer.IB_LINK, DownCause.IB_LINK, link.message),
                                 server_version=e.server_version, accounts=e.accounts)
            return self.engine.observe(WentDown(e.at, DownCause.IB_LINK, ib.Layer.IB_LINK, link.message,
                                                code=link.code))
        self.state = self.state.up(e.at, e.server_version, e.accounts, link_ok=True if self._link_word else None)
        return self.engine.observe(CameBack(e.at, Recovery(RecoveryHow.RECONNECTED, attempts=item.attempts)))

    def _notice(self, n: GatewayNotice) -> list[Alert]:
        # Judged by code, never by ib_async's log level (it logs 1100/1101 as errors).
        if n.notice.is_link_down:
            self._link_word = n
            self.state = self.state.down(n.at, ib.Layer.IB_LINK, DownCause.IB_LINK, n.message)
            return self.engine.observe(WentDown(n.at, DownCause.IB_LINK, ib.Layer.IB_LINK, n.message, code=n.code))
        inc = self.engine.incident
        down = self._link_down()
        link_lost = down is not None or (inc is not None and inc.current is DownCause.IB_LINK)
        if n.notice.is_link_back:
            if link_lost:
                return self._link_back(n)
            self._link_ok(n)
            return self.engine.tick()
        if n.farm and n.notice in (NoticeKind.FARM_BROKEN, NoticeKind.FARM_OK, NoticeKind.FARM_INACTIVE):
            farm = FarmState(n.farm, n.notice is not NoticeKind.FARM_BROKEN, n.code, n.at)
            self.state = self.state.farm(farm)
            # After 2110 a Gateway may announce its return only by farms coming back, no 1101/1102;
            # after 1100 only 1101/1102 say the link is back.
            if n.notice is NoticeKind.FARM_OK and down is not None and down.notice is NoticeKind.SERVER_BROKEN:
                return self._link_back(n) + self.engine.observe(farm)
            if n.notice is NoticeKind.FARM_OK and not link_lost:
                self._link_ok(n)
            return self.engine.observe(farm)
        return self.engine.tick()

    def _link_down(self) -> GatewayNotice | None:
        """The "link lost" notice, when that is the Gateway's last word on this connection."""
        word = self._link_word
        return word if word is not None and word.notice.is_link_down else None

    def _link_ok(self, n: GatewayNotice) -> None:
        """A word that the IB link works (1101/1102, a farm OK) while nothing said otherwise."""
        self._link_word = n
        if self.state.phase is Phase.UP:
            self.state = replace(self.state, link_ok=True)

    def _link_back(self, n: GatewayNotice) -> list[Alert]:
        self._link_word = n
        if not self._api_up:
            return self.engine.tick()  # said while connecting: the connection itself decides
        self.state = self.state.up(n.at, link_ok=True)
        return self.engine.observe(CameBack(n.at, Recovery(RecoveryHow.LINK_RESTORED, code=n.code)))

    async def _deliver(self, alert: Alert) -> None:
        self.log.info("alert %s%s: %s", alert.kind, " (edit)" if alert.edit else "", alert.text.splitlines()[0])
        try:
            await self.sink(alert)
        except Exception:
            # The sink is the outbox; if it fails we still keep watching (and say so in our own log).
            self.log.exception("could not hand over the %s alert", alert.kind)

    async def _persist(self) -> None:
        # Taken even without a store: they must not pile up.
        updates, remembered = self.engine.take_updates(), self.engine.take_remembered()
        if self.store is None:
            return
        for inc in updates:
            await self._stored(self.store.save(inc.record()))
        if remembered is not None:
            await self._stored(self.store.remember(self.gw.name, to_json(remembered), self.clock.wall()))

    async def _seen(self) -> None:
        """Mark this watched span as still watched now (uptime counts only watched time)."""
        if self.store is not None and self._coverage is not None:
            await self._stored(self.store.watch_seen(self._coverage, self.clock.wall()))

    async def _stored(self, write: Awaitable[Any]) -> Any:
        try:
            return await write
        except Exception:
            self.log.exception("could not store the watch's record")
            return None


class Watch:
    """Every configured Gateway's watcher, started and stopped together."""

    def __init__(self, config: Config, sink: AlertSink, *, store: IncidentStore | None = None,
                 clock: Clock = SYSTEM_CLOCK, client_options: dict[str, Any] | None = None,
                 **watcher_options: Any) -> None:
        self.store = store
        self.watchers = {gw.name: GatewayWatcher(gw, config.watch, sink, store=store, clock=clock,
                                                 client_options=client_options, **watcher_options)
                         for gw in config.gateways}

    def watcher(self, gateway: str | None = None) -> GatewayWatcher:
        if gateway is None:
            return next(iter(self.watchers.values()))
        if gateway not in self.watchers:
            raise KeyError(f"unknown Gateway '{gateway}'; watched: {', '.join(self.watchers)}")
        return self.watchers[gateway]

    async def start(self) -> None:
        for w in self.watchers.values():
            await w.start()

    async def stop(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.watchers.values()), return_exceptions=True)

    async def __aenter__(self) -> Watch:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def acknowledge(self, key: str, by: str) -> bool:
        """Take the outage ``key`` ('paper@1764...'; see :meth:`find` for a button's reference)."""
        gateway = key.rpartition("@")[0]
        return gateway in self.watchers and self.watchers[gateway].acknowledge(by, key)

    async def find(self, ref: str) -> tuple[str, str] | None:
        """(Gateway, incident key) for a button's reference, or None when no watched Gateway has it.
        Older alerts carried the key itself ('paper@1764...'): those still work."""
        for name, w in self.watchers.items():
            for inc in (w.engine.incident, w.engine.last_incident):
                if inc is not None and ref in (inc.ref, inc.key):
                    return name, inc.key
        gateway = ref.rpartition("@")[0]
        if gateway in self.watchers:
            return gateway, ref
        record = await self.store.by_ref(ref) if self.store is not None else None
        return (record.gateway, record.key) if record is not None and record.gateway in self.watchers else None

    def by_gateway_ref(self, ref: str) -> str | None:
        """The watched Gateway a farm alert's button names (``gateway_ref``)."""
        return next((name for name in self.watchers if gateway_ref(name) == ref), None)

    def mute(self, gateway: str | None, until: datetime | None) -> None:
        """Mute one Gateway, or all with ``gateway=None``; ``until=None`` unmutes."""
        for w in (self.watchers.values() if gateway is None else [self.watcher(gateway)]):
            w.mute(until)

    def suppress(self, gateway: str, reason: str, until: datetime | None) -> None:
        self.watcher(gateway).suppress(reason, until)
