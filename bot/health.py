"""What /status shows: how far the Gateway can be reached right now, layer by layer.

While a check runs, its client's events keep a :class:`LiveView` current, so status costs no
extra connection. When nothing runs, :func:`probe` connects briefly with its own client id.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from bot.client_ids import ClientRole
from bot.config import GatewayConfig
from bot.ibkr.client import IBKRClient, probe_port
from bot.ibkr.errors import GatewayError, Layer
from bot.ibkr.events import (
    ClientEvent,
    Connected,
    Disconnected,
    DisconnectReason,
    GatewayNotice,
    Heartbeat,
    NoticeKind,
    Reconnected,
)

STATUS_TIMEOUT = 3.0


@dataclass(frozen=True)
class Health:
    gateway: GatewayConfig
    port_ms: float | None = None  # TCP connect time; None when the port did not answer
    error: str | None = None
    failed_layer: Layer | None = None
    server_version: int | None = None
    accounts: tuple[str, ...] = ()
    connected_since: datetime | None = None  # only for "live": a probe's own connection has no uptime
    link_ok: bool | None = None
    farms_ok: bool | None = None
    last_rtt: float | None = None
    source: str = "probe"  # "probe" (a fresh connection) or "live" (the running check's client)

    def reached(self, layer: Layer) -> bool | None:
        """True reached, False failed there or before, None not known."""
        if layer is Layer.IB_LINK:
            return self.link_ok
        if layer is Layer.DATA_FARMS:
            return self.farms_ok
        if self.failed_layer is not None:
            return layer < self.failed_layer
        return self.server_version is not None or (layer is Layer.TCP_PORT and self.port_ms is not None)

    @property
    def uptime(self) -> float | None:
        return (datetime.now(UTC) - self.connected_since).total_seconds() if self.connected_since else None


@dataclass
class LiveView:
    """A Gateway's state as a client reports it through events: a running check's, or the probe's own."""

    connected: Connected | None = None
    connected_since: datetime | None = None
    link_ok: bool = True
    farms: dict[str, bool] = field(default_factory=dict)
    last_rtt: float | None = None

    def on_event(self, event: ClientEvent) -> None:
        match event:
            case Connected():
                self.connected, self.connected_since = event, self.connected_since or event.at
            case Reconnected():
                self.connected_since = event.at
            case Disconnected():
                self.connected, self.connected_since = None, None
                if event.reason is DisconnectReason.LOCAL:
                    self.farms.clear()
            case GatewayNotice(notice=kind) if kind.is_link_down or kind.is_link_back:
                self.link_ok = kind.is_link_back
            case GatewayNotice(farm=farm) if farm:
                # Inactive (2107/2108) is normal; broken and still connecting (2119) serve nothing yet.
                self.farms[farm] = event.notice in (NoticeKind.FARM_OK, NoticeKind.FARM_INACTIVE)
            case Heartbeat(rtt=rtt) if rtt is not None:
                self.last_rtt = rtt

    def health(self, gateway: GatewayConfig, port_ms: float | None) -> Health:
        c = self.connected
        return Health(gateway, port_ms, None if c else "the running check is not connected right now", None,
                      c.server_version if c else None, c.accounts if c else (), self.connected_since,
                      self.link_ok if c else None, (all(self.farms.values()) if self.farms else None) if c else None,
                      self.last_rtt, "live")


async def probe(gw: GatewayConfig, live: LiveView | None = None) -> Health:
    """Health now: from the running check's client when there is one, else a short connection."""
    start = time.monotonic()
    try:
        await probe_port(gw.host, gw.port, STATUS_TIMEOUT)
    except GatewayError as e:
        return Health(gw, None, str(e), e.layer)
    port_ms = (time.monotonic() - start) * 1000
    if live is not None:
        return live.health(gw, port_ms)
    client = IBKRClient.from_config(gw, ClientRole.STATUS, reconnect=None,
                                    connect_timeout=min(gw.connect_timeout, STATUS_TIMEOUT))
    view = LiveView()  # the probe's own client, read as a check's is
    client.events.subscribe(view.on_event)
    try:
        await client.connect()
        await client.ping()
        health = view.health(gw, port_ms)
    except GatewayError as e:  # a ping unanswered after connecting too: a verdict, not a crash in /status
        return Health(gw, port_ms, str(e), e.layer)
    finally:
        await client.disconnect()
    return replace(health, connected_since=None, source="probe")  # its own connection has no uptime


class StatusProbes:
    """/status's probes, one at a time per Gateway; who asks while one runs gets its answer.

    Every probe of a Gateway connects with the same client id (ClientRole.STATUS), and a Gateway
    refuses a second client with an id in use (326): two people's /status at once must not both connect.
    """

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._last: dict[str, tuple[float, Health]] = {}  # per Gateway: when the last probe ended, its verdict

    async def health(self, gw: GatewayConfig) -> Health:
        asked = time.monotonic()
        async with self._locks.setdefault(gw.name, asyncio.Lock()):
            ended, health = self._last.get(gw.name, (0.0, None))
            if health is not None and ended >= asked:  # it ran while we waited: as fresh as ours would be
                return health
            health = await probe(gw)
            self._last[gw.name] = time.monotonic(), health
            return health
