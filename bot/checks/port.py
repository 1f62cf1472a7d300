"""Step 1: is anything listening on the Gateway's port, and how fast does TCP connect?"""

from __future__ import annotations

import time

from bot.checks.base import Check, CheckContext, Recorder
from bot.ibkr.client import probe_port
from storage.models import CheckRecord

TCP_CONNECT = "tcp_connect"  # ms


class PortCheck(Check):
    name = "port"

    async def execute(self, ctx: CheckContext, rec: Recorder) -> None:
        gw = ctx.gateway
        rec.progress(f"Knocking on {gw.host}:{gw.port}")
        start = time.monotonic()
        await probe_port(gw.host, gw.port, gw.connect_timeout)  # typed errors fail the check
        latency = time.monotonic() - start
        rec.metric(TCP_CONNECT, latency * 1000, "ms")
        rec.note(f"Port {gw.port} on {gw.host} accepts TCP connections ({latency * 1000:.1f} ms)")

    @classmethod
    def figures(cls, check: CheckRecord) -> str:
        ms = check.metric(TCP_CONNECT)
        return "" if ms is None else f"TCP connect {ms:.1f} ms"
