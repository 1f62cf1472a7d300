"""IBC's command server as the simulated Gateway speaks it on its control port, reply for reply.

Read from IBC 3.24.1's sources (CommandDispatcher, CommandChannel, RestartTask, StopTask): a
command is a whole line, compared case-insensitively; replies are ``OK <text>`` / ``ERROR <text>``;
an empty line gets no reply. On the Gateway, RESTART answers two lines, ``OK RESTART in progress``
then ``OK RESTART at hh:mm AM``, and closes the connection; the restart itself happens at that
minute (the one after when the clock is at second 58 or later) and keeps the session.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot.config_rules import Range
from bot.lab import wire

if TYPE_CHECKING:
    from bot.lab.simulator import SimulatedGateway

log = logging.getLogger(__name__)

WORDS = ("EXIT", "STOP", "RESTART", "PAUSE", "ENABLEAPI", "RECONNECTDATA", "RECONNECTACCOUNT")
INVALID = "ERROR Command invalid"
# RestartTask waits out seconds 58 and 59 of a minute, then names the minute after the next one.
LATE_IN_MINUTE = 2 / 60
MINUTE = Range(0.05, 3600)  # --ibc-minute: 60 is IBC's own
DOWN = Range(0, 3600)


@dataclass(frozen=True)
class IbcProfile:
    """How the simulated Gateway behaves under IBC's commands."""

    minute: float = 60.0  # the length of IBC's "next minute"; shorter ones make tests and demos quick
    down: float = 5.0  # RESTART: the API port closed this long at the named minute ...
    ready_after: float = 2.0  # ... then open, the API ready this long later
    reconnect_data: float = 1.0  # RECONNECTDATA: the farms broken this long, then OK again


@dataclass(frozen=True)
class Reply:
    lines: tuple[str, ...]
    close: bool = False  # IBC closes the connection after this reply


def clock_label(moment: float) -> str:
    """Java's ``hh:mm a`` in English, as RestartTask formats the minute: ``09:05 PM``."""
    t = datetime.fromtimestamp(moment)
    return f"{t.hour % 12 or 12:02d}:{t.minute:02d} {'AM' if t.hour < 12 else 'PM'}"


def next_minute(now: float, minute: float = 60.0) -> float:
    """The moment IBC's RESTART falls on: the next minute boundary, the one after when late in this one."""
    boundary = (math.floor(now / minute) + 1) * minute
    if boundary - now <= minute * LATE_IN_MINUTE:
        boundary += minute
    return boundary


class SimulatedIbc:
    """IBC running beside one SimulatedGateway: its command replies and what they do to the Gateway."""

    def __init__(self, gateway: SimulatedGateway, profile: IbcProfile | None = None) -> None:
        self.gateway = gateway
        self.profile = profile or IbcProfile()
        self.stopping = False  # StopTask's lock: a new Gateway process (start) clears it
        self.pending: tuple[str, float] | None = None  # RestartTask's lock: (verb, when), until that minute

    async def command(self, word: str) -> Reply:
        """One of ``WORDS`` (any case); anything else is IBC's ``Command invalid``."""
        match word.upper():
            case "EXIT":
                return Reply(("OK Goodbye",), close=True)
            case "STOP":
                return await self._stop()
            case "RESTART" | "PAUSE":
                return self._restart(word.upper())
            case "ENABLEAPI":
                return Reply(("ERROR ENABLEAPI is not valid for the IB Gateway",))
            case "RECONNECTDATA":
                await self._reconnect_data()
                return Reply(("OK ",))
            case "RECONNECTACCOUNT":
                log.info("IBC: RECONNECTACCOUNT (Ctrl-Alt-R)")
                return Reply(("OK ",))
        return Reply((INVALID,))

    async def _stop(self) -> Reply:
        if self.stopping:
            return Reply(("ERROR STOP already in progress",), close=True)
        self.stopping = True
        self.pending = None
        self.gateway.cancel_restart()
        log.info("IBC: STOP: the Gateway closes (File > Close)")
        await self.gateway.stop()
        return Reply(("OK Shutting down: STOP command",), close=True)

    def _restart(self, verb: str) -> Reply:
        if self.pending is not None:
            return Reply((f"ERROR {verb} already in progress",), close=True)
        now = time.time()
        at = next_minute(now, self.profile.minute)
        self.pending = (verb, at)
        self.gateway.schedule("ibc", at - now, self._at_the_minute(verb, at - now))
        log.info("IBC: %s at %s (in %.1f s)", verb, clock_label(at), at - now)
        return Reply((f"OK {verb} in progress", f"OK {verb} at {clock_label(at)}"), close=True)

    async def _at_the_minute(self, verb: str, wait: float) -> None:
        await asyncio.sleep(wait)
        self.pending = None  # a new Gateway process: its IBC knows of no restart
        p = self.profile
        if verb == "PAUSE":  # the session is kept, but IBC's start script does not start it again
            await self.gateway.stop(reset=True)
            return
        # The daily auto-restart resets its API clients' sockets.
        await self.gateway.begin_restart(p.down, ready_after=p.ready_after, reset=True)
        self.gateway.unfreeze()  # the new Gateway process answers: a restart is what cures a hung one

    async def _reconnect_data(self) -> None:
        """Ctrl-Alt-F: every farm connection drops and comes back."""
        for code in wire.FARMS_BROKEN:
            await self.gateway.send_notice(code)

        async def farms_back() -> None:
            await asyncio.sleep(self.profile.reconnect_data)
            for code in wire.FARMS_OK:
                await self.gateway.send_notice(code)
        self.gateway.schedule("farms", self.profile.reconnect_data, farms_back())

    def faults(self) -> list[str]:
        if self.pending is None:
            return []
        verb, at = self.pending
        return [f"IBC {verb} at {clock_label(at)} ({max(0.0, at - time.time()):.0f} s left)"]


def add_options(parser: argparse.ArgumentParser, typed: Callable[[Range], Callable[[str], Any]]) -> None:
    """``gwbot simulate``'s IBC options; ``typed(rule)`` makes a flag's type from its Range."""
    d = IbcProfile()
    add = parser.add_argument
    add("--ibc-minute", type=typed(MINUTE), default=d.minute, metavar="SECONDS",
        help=f"the length of IBC's 'next minute' that RESTART waits for (default {d.minute:g})")
    add("--ibc-down", type=typed(DOWN), default=d.down, metavar="SECONDS",
        help=f"IBC RESTART: the API port stays closed this long (default {d.down:g})")
    add("--ibc-ready-after", type=typed(DOWN), default=d.ready_after, metavar="SECONDS",
        help=f"IBC RESTART: the API is ready this long after the port reopens (default {d.ready_after:g})")


def profile_from(args: argparse.Namespace) -> IbcProfile:
    return IbcProfile(minute=args.ibc_minute, down=args.ibc_down, ready_after=args.ibc_ready_after)
