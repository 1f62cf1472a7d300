"""Step 1: is anything listening on the Gateway's port, and how fast does TCP connect?"""

from __future__ import annotations

import time

from bot.checks.base import Check, CheckContext, Recorder
from bot.ibkr.client import probe_port

TCP_CONNECT = "tcp_connect"  # ms


class PortCheck(Check):
    name = "port"
    key_figures = (TCP_CONNECT, "TCP connect {tcp_connect:.1f} ms")

    async def execute(self, ctx: CheckContext, rec: Recorder) -> None:
        gw = ctx.gateway
        rec.progress(f"Knocking on {gw.host}:{gw.port}")
        start = time.monotonic()
        await probe_port(gw.host, gw.port, gw.connect_timeout)  # typed errors fail the check
        latency = time.monotonic() - start
        rec.metric(TCP_CONNECT, latency * 1000, "ms")
        rec.note(f"Port {gw.port} on {gw.host} accepts TCP connections ({latency * 1000:.1f} ms)")
