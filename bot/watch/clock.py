"""The watch's two clocks: the monotonic one that times everything, the wall clock that people read.

Debounces, reminders, mutes and flap windows are durations: they run on ``mono()``, so an NTP
step neither fires them early nor holds them back. Wall time (``wall()``, UTC) is for what people
read (an alert's times, a mute's "until 14:05"), for IBKR's windows (set in local wall-clock time)
and for what is stored, since a monotonic reading means nothing to the next process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def wall(self) -> datetime: ...

    def mono(self) -> float: ...


@dataclass(frozen=True)
class SystemClock:
    def wall(self) -> datetime:
        return datetime.now(UTC)

    def mono(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK = SystemClock()


def mono_of(clock: Clock, at: datetime) -> float:
    """The monotonic reading that corresponds to wall time ``at``, as the clocks stand now."""
    return clock.mono() + (at - clock.wall()).total_seconds()


def wall_of(clock: Clock, mono: float) -> datetime:
    """The wall time that corresponds to monotonic reading ``mono``, as the clocks stand now."""
    return clock.wall() + timedelta(seconds=mono - clock.mono())
