"""The dead man's switch: while gwbot is healthy it requests ``selfcheck.ping_url`` every
``selfcheck.every`` seconds, so an outside service (Healthchecks, Uptime Kuma's push monitor)
pages the squad when the pings stop: gwbot cannot report its own death.

Healthy means this loop got to run on time (the event loop is not stuck) and the outbox is not
stuck (no message of a chat that is not held has waited longer than ``every``).
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp

from bot.config import SelfcheckConfig
from bot.outbox import Outbox

log = logging.getLogger(__name__)
REQUEST_TIMEOUT = 10.0


async def unhealthy(outbox: Outbox, *, late: float, late_limit: float, stuck_after: float) -> str | None:
    """Why gwbot is not healthy now (its loop woke ``late`` seconds late); None when it is."""
    if late > late_limit:
        return f"the event loop ran {late:.1f} s late"
    if not outbox.running:
        return "the outbox sender is not running"
    if await outbox.stuck(stuck_after):
        return f"a message has waited more than {stuck_after:g} s to be sent"
    return None


async def ping_forever(config: SelfcheckConfig, outbox: Outbox) -> None:
    """Run until cancelled; does nothing without a ping_url."""
    if not config.ping_url:
        return
    log.info("dead man's switch: requesting %s every %g s while healthy", config.ping_url, config.every)
    timeout = aiohttp.ClientTimeout(total=min(REQUEST_TIMEOUT, config.every))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        due, failing = time.monotonic(), False
        while True:
            if why := await unhealthy(outbox, late=time.monotonic() - due, late_limit=config.every,
                                   stuck_after=config.every):
                log.warning("dead man's switch: not pinging: %s", why)
            else:
                try:
                    async with session.get(config.ping_url) as response:
                        response.raise_for_status()
                    if failing:
                        log.info("dead man's switch: %s answers again", config.ping_url)
                    failing = False
                except (aiohttp.ClientError, TimeoutError) as e:
                    if not failing:  # one line per streak, not one per ping
                        log.warning("dead man's switch: %s failed: %s", config.ping_url, e or type(e).__name__)
                    failing = True
            due = time.monotonic() + config.every
            await asyncio.sleep(config.every)  # woken late if something blocks the loop: that is measured
