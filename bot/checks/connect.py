"""Step 2: the API handshake, layer by layer, so a failure names where it stopped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bot.checks.base import Check, CheckContext, Recorder, mark, passed
from bot.ibkr.client import IBKRClient
from bot.ibkr.errors import GatewayError, Layer
from bot.ibkr.events import ClientEvent, Connected, GatewayNotice, NoticeKind
from storage.models import CheckRecord, RunRecord

# How long each start-up request gwbot itself skips may take before we call it unanswered.
SYNC_PROBE_TIMEOUT = 2.0

CONNECT = "connect"  # ms from connect() to a ready API
SERVER_VERSION = "server_version"
FIRST_RTT = "first_rtt"  # ms
ACCOUNTS = "accounts"  # fact: the managed accounts, comma-separated


class ConnectCheck(Check):
    name = "connect"
    section = "Connection Test"
    key_figures = (CONNECT, "server version {server_version:.0f}, connected in {connect:.0f} ms")

    @classmethod
    def report_lines(cls, run: RunRecord, check: CheckRecord | None) -> list[str]:
        version, ms = (None, None) if check is None else (check.metric(SERVER_VERSION), check.metric(CONNECT))
        detail = ""
        if check is not None and version is not None and ms is not None:
            detail = f" (server version {version:.0f}, accounts {check.facts.get(ACCOUNTS, '')}, {ms:.0f} ms)"
        return [f"- {mark(passed(check))} Connected successfully{detail}"]

    async def execute(self, ctx: CheckContext, rec: Recorder) -> None:
        seen: list[GatewayNotice] = []
        noticed = asyncio.Event()  # set on each notice, so the farm wait re-judges only when one arrives
        ups: list[Connected] = []
        client = ctx.client(reconnect=None)

        def collect(event: ClientEvent) -> None:
            if isinstance(event, GatewayNotice):
                seen.append(event)
                noticed.set()
            elif isinstance(event, Connected):
                ups.append(event)

        client.events.subscribe(collect)
        rec.progress(f"Connecting to {ctx.gateway.host}:{ctx.gateway.port} as client {ctx.gateway.client_id}")
        start = time.monotonic()
        try:
            await client.connect()
        except GatewayError as e:
            reached = [layer.label for layer in Layer if layer < e.layer]
            rec.note(f"Layers reached: {', '.join(reached) or 'none'}; failed at: {e.layer.label}")
            raise
        try:
            rec.metric(CONNECT, (time.monotonic() - start) * 1000, "ms")
            up = ups[-1]  # connect() returns once it announced the session
            rec.metric(SERVER_VERSION, float(up.server_version), "")
            rec.note(f"Connected: server version {up.server_version}, connection time {up.connection_time}")
            rec.note(f"Managed accounts: {', '.join(up.accounts)}")
            rec.facts[ACCOUNTS] = ", ".join(up.accounts)
            if ctx.gateway.account and ctx.gateway.account not in up.accounts:
                rec.fail(f"Configured account {ctx.gateway.account} is not among the managed accounts",
                         ("Check ibkr.account in config.yaml", "Log the Gateway in to that account"))
            await self._probe_startup_requests(client, rec, seen)
            await self._wait_for_farms(seen, noticed, ctx.config.checks.farm_grace)
            self._judge_notices(rec, seen, ctx.config.checks.farm_grace)
            rtt = await client.ping()
            rec.metric(FIRST_RTT, rtt * 1000, "ms")
        finally:
            await client.disconnect()

    @staticmethod
    async def _probe_startup_requests(client: IBKRClient, rec: Recorder, seen: list[GatewayNotice]) -> None:
        """Ask what ib_async's default connect would wait for and gwbot skips; an unanswered one
        is worth a warning (other tools would hang on it), never a failure."""
        ib = client.ib
        if ib is None:
            return
        sync_probes: dict[str, Callable[[], Awaitable[Any]]] = {
            "positions": ib.reqPositionsAsync,
            "open orders": ib.reqOpenOrdersAsync,
            "completed orders": lambda: ib.reqCompletedOrdersAsync(False),
            "executions": ib.reqExecutionsAsync,
        }

        async def answered(request: Callable[[], Awaitable[Any]]) -> bool:
            try:
                await asyncio.wait_for(request(), SYNC_PROBE_TIMEOUT)
            except (TimeoutError, ConnectionError):
                return False
            return True

        results = await asyncio.gather(*(answered(r) for r in sync_probes.values()))
        silent = [name for name, ok in zip(sync_probes, results, strict=True) if not ok]
        read_only = any(n.notice is NoticeKind.READ_ONLY for n in seen)
        if read_only:
            rec.note("The Gateway's API is Read-Only (error 321 on order requests): fine, gwbot places no orders "
                     "and connects read-only")
            silent = [name for name in silent if "orders" not in name]  # refused with 321, as expected
        if silent:
            rec.warn(f"Start-up request(s) unanswered within {SYNC_PROBE_TIMEOUT:g} s: {', '.join(silent)}. gwbot "
                     "does not wait for them; tools using ib_async's default connect would hang here")

    @staticmethod
    async def _wait_for_farms(seen: list[GatewayNotice], noticed: asyncio.Event, grace: float) -> None:
        """Give a farm broken (or connecting) at connect ``grace`` seconds to report OK."""
        try:
            async with asyncio.timeout(grace):
                while _farms_not_ok(seen):
                    noticed.clear()  # no await since the check: a notice arriving now is not missed
                    await noticed.wait()
        except TimeoutError:
            pass  # still not OK after the grace: _judge_notices warns about it

    @staticmethod
    def _judge_notices(rec: Recorder, seen: list[GatewayNotice], grace: float) -> None:
        for n in seen:
            if n.notice is not NoticeKind.READ_ONLY:
                rec.note(n.meaning or f"{n.code}: {n.message}")
        link_down = _link_down(seen)
        if link_down:
            rec.fail(f"The Gateway reports its link to IB's servers is down ({link_down.code}: {link_down.message})",
                     ("Check the Gateway's internet connection", "Wait for 1101/1102 (restored) and test again"))
        blips = {n.farm for n in seen if n.notice in (NoticeKind.FARM_BROKEN, NoticeKind.FARM_CONNECTING)}
        still = _farms_not_ok(seen)
        for farm in sorted(blips - still):
            rec.note(f"Data farm '{farm}' was broken or connecting at connect and came back within {grace:g} s")
        if still:
            rec.warn(f"Data farm(s) not OK {grace:g} s after connecting: {', '.join(sorted(still))} "
                     "(data from them is unavailable until the Gateway reports them OK)")
        layers = [Layer.TCP_PORT, Layer.API_HANDSHAKE, Layer.API_READY, Layer.STARTUP_SYNC, Layer.ACCOUNT]
        if not link_down:
            layers.append(Layer.IB_LINK)
        if not still and any(n.notice in (NoticeKind.FARM_OK, NoticeKind.FARM_INACTIVE) for n in seen):
            layers.append(Layer.DATA_FARMS)
        rec.note(f"Layers reached: {', '.join(layer.label for layer in layers)}")


def _farms_not_ok(seen: list[GatewayNotice]) -> set[str]:
    """Farms whose latest notice is broken or connecting; inactive (2107/2108) is normal."""
    latest = {n.farm: n.notice for n in seen if n.farm}
    return {farm for farm, kind in latest.items() if kind in (NoticeKind.FARM_BROKEN, NoticeKind.FARM_CONNECTING)}


def _link_down(seen: list[GatewayNotice]) -> GatewayNotice | None:
    """The last link notice if it says the link is down (1100/2110 not followed by 1101/1102)."""
    links = [n for n in seen if n.notice.is_link_down or n.notice.is_link_back]
    return links[-1] if links and links[-1].notice.is_link_down else None
