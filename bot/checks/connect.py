"""Step 2: the API handshake, layer by layer, so a failure names where it stopped."""

from __future__ import annotations

import time

from bot.checks.base import Check, CheckContext, Recorder
from bot.ibkr import notices
from bot.ibkr.errors import GatewayError, Layer
from bot.ibkr.events import ClientEvent, GatewayNotice, NoticeKind


class ConnectCheck(Check):
    name = "connect"

    async def execute(self, ctx: CheckContext, rec: Recorder) -> None:
        seen: list[GatewayNotice] = []
        client = ctx.client(auto_reconnect=False)

        def collect(event: ClientEvent) -> None:
            if isinstance(event, GatewayNotice):
                seen.append(event)

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
            rec.metric("connect", (time.monotonic() - start) * 1000, "ms")
            status = client.status()
            rec.metric("server_version", float(status.server_version or 0), "")
            rec.note(f"Connected: server version {status.server_version}, connection time {status.connection_time}")
            rec.note(f"Managed accounts: {', '.join(status.accounts)}")
            if ctx.gateway.account and ctx.gateway.account not in status.accounts:
                rec.fail(f"Configured account {ctx.gateway.account} is not among the managed accounts",
                         ("Check ibkr.account in config.yaml", "Log the Gateway in to that account"))
            self._judge_notices(rec, seen)
            rtt = await client.ping()
            rec.metric("first_rtt", rtt * 1000, "ms")
        finally:
            await client.disconnect()

    @staticmethod
    def _judge_notices(rec: Recorder, seen: list[GatewayNotice]) -> None:
        for n in seen:
            rec.note(notices.explain(n.code, n.message))
        if any(n.notice is NoticeKind.LINK_LOST for n in seen):
            rec.fail("The Gateway reports its link to IB's servers is down (1100)",
                     ("Check the Gateway's internet connection", "Wait for 1102 (restored) and test again"))
        broken = [n.farm for n in seen if n.notice is NoticeKind.FARM_BROKEN]
        if broken:
            rec.fail(f"Data farm connection broken: {', '.join(broken)}", ("Check the Gateway's data farm status",))
        layers = [Layer.TCP_PORT, Layer.API_HANDSHAKE, Layer.API_READY, Layer.STARTUP_SYNC, Layer.ACCOUNT]
        if not any(n.notice is NoticeKind.LINK_LOST for n in seen):
            layers.append(Layer.IB_LINK)
        if not broken and any(n.notice is NoticeKind.FARM_OK for n in seen):
            layers.append(Layer.DATA_FARMS)
        rec.note(f"Layers reached: {', '.join(layer.label for layer in layers)}")
