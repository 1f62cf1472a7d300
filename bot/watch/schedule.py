"""IBKR's schedule: when a Gateway is expected to go away, and when the weekly login is due.

Windows are local wall-clock times in their own time zone (``zoneinfo``), so they follow daylight
saving: the nightly reset stays at 00:15-01:45 New York time whether that is 05:15 or 04:15 UTC.
A window whose end is not after its start ends the next day (Friday 23:00 - Saturday 03:00).
Defaults come from IBKR's system-status page and "auto-restart considerations"; times vary by
region and IBKR changes them, so config can replace them (``watch.expected``, read by
``parse_window``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
EVERY_DAY = frozenset(range(7))
NEW_YORK = "America/New_York"


class WindowKind(StrEnum):
    RESET = "reset"              # IBKR's nightly server reset: 1100 then 1101/1102, socket stays up
    MAINTENANCE = "maintenance"  # IBKR's weekend maintenance
    RESTART = "restart"          # the Gateway's own daily auto-restart: the socket and port go away
    OTHER = "other"


@dataclass(frozen=True)
class Window:
    """A recurring expected outage; ``days`` are the weekdays it STARTS on (Monday = 0)."""

    name: str
    start: time
    end: time
    tz: str
    days: frozenset[int] = EVERY_DAY
    kind: WindowKind = WindowKind.OTHER

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def occurrence_on(self, day: datetime) -> Occurrence:
        """The occurrence starting on ``day``'s local date (whatever its weekday)."""
        zone = self.zone
        date = day.date()
        start = datetime.combine(date, self.start, tzinfo=zone)
        end_date = date + timedelta(days=1) if self.end <= self.start else date
        end = datetime.combine(end_date, self.end, tzinfo=zone)
        return Occurrence(self, start.astimezone(UTC), end.astimezone(UTC))

    def occurrences(self, start: datetime, end: datetime) -> list[Occurrence]:
        """Occurrences overlapping [start, end), in order."""
        first = start.astimezone(self.zone) - timedelta(days=1)  # one that started yesterday may still run
        days = (first + timedelta(days=n) for n in range((end.astimezone(self.zone).date() - first.date()).days + 1))
        occurrences = (self.occurrence_on(day) for day in days if day.weekday() in self.days)
        return [occ for occ in occurrences if occ.start < end and occ.end > start]


@dataclass(frozen=True)
class Occurrence:
    window: Window
    start: datetime  # UTC
    end: datetime    # UTC

    def contains(self, at: datetime) -> bool:
        return self.start <= at < self.end

    @property
    def label(self) -> str:
        """'nightly reset window (00:15–01:45 EST)', weekdays shown for weekly windows."""
        zone = self.window.zone
        s, e = self.start.astimezone(zone), self.end.astimezone(zone)
        weekly = self.window.days != EVERY_DAY
        fs = "%a %H:%M" if weekly else "%H:%M"
        fe = "%a %H:%M" if weekly and e.date() != s.date() else "%H:%M"
        return f"{self.window.name} window ({s.strftime(fs)}–{e.strftime(fe)} {e.tzname()})"


# IBKR's system-status page (see /work/shared/tws-api-notes.md, "A real Gateway's day").
WEEKEND = Window("weekend maintenance", time(23), time(3), NEW_YORK, frozenset({4}), WindowKind.MAINTENANCE)
# IB Gateway's "Auto restart" time is set per installation; 23:45 is the common default. Its restart
# keeps the port closed for ~35-80 s, so ten minutes covers it with room to log in again.
AUTO_RESTART = Window("Gateway auto-restart", time(23, 45), time(23, 55), NEW_YORK, kind=WindowKind.RESTART)
REGIONS: dict[str, tuple[Window, ...]] = {
    "north_america": (Window("nightly reset", time(0, 15), time(1, 45), NEW_YORK, kind=WindowKind.RESET),),
    "europe": (Window("nightly reset", time(6, 25), time(7, 45), "Europe/Zurich", kind=WindowKind.RESET),),
    "asia": (
        Window("nightly reset", time(4, 45), time(6, 5), "Asia/Hong_Kong", kind=WindowKind.RESET),
        Window("evening reset", time(20, 15), time(21, 15), "Asia/Hong_Kong", kind=WindowKind.RESET),
    ),
}


def default_windows(region: str = "north_america") -> tuple[Window, ...]:
    return (*REGIONS[region], WEEKEND, AUTO_RESTART)


# Auto-restart tokens expire Sunday 01:00 New York time: one 2FA login a week (IBKR's
# "auto-restart considerations"); missed, the Gateway stays down all Monday.
RELOGIN_DAY, RELOGIN_TIME = 6, time(1)


@dataclass(frozen=True)
class Schedule:
    windows: tuple[Window, ...] = default_windows()
    grace: float = 300.0            # seconds after a window's end before a still-down Gateway is an outage
    relogin_reminder: float = 3600.0  # seconds before the weekly token expiry; 0 = no reminder

    def window_at(self, at: datetime) -> Occurrence | None:
        """The expected window running at ``at`` (the one ending last when several overlap)."""
        running = [o for w in self.windows for o in w.occurrences(at, at + timedelta(microseconds=1)) if o.contains(at)]
        return max(running, key=lambda o: o.end) if running else None

    def escalate_at(self, occ: Occurrence) -> datetime:
        """When a Gateway still down after ``occ`` becomes an outage."""
        return occ.end + timedelta(seconds=self.grace)

    def expected_between(self, start: datetime, end: datetime) -> list[Occurrence]:
        return sorted((o for w in self.windows for o in w.occurrences(start, end)), key=lambda o: o.start)

    @staticmethod
    def next_relogin(after: datetime) -> datetime:
        """The next weekly token expiry (Sunday 01:00 New York) strictly after ``after``."""
        zone = ZoneInfo(NEW_YORK)
        local = after.astimezone(zone)
        day = local.date() + timedelta(days=(RELOGIN_DAY - local.weekday()) % 7)
        while True:
            at = datetime.combine(day, RELOGIN_TIME, tzinfo=zone).astimezone(UTC)
            if at > after:
                return at
            day += timedelta(days=7)


# A restart this close before the weekly token expiry may fall after it (IBC names the next minute,
# the Gateway takes a minute or two to log in again): it would then need the 2FA login.
RESTART_MARGIN = timedelta(minutes=10)
# Since when a session of unknown age may predate the last expiry: a day after it, assume it does.
UNKNOWN_SESSION = timedelta(days=1)


def restart_needs_login(now: datetime, up_since: datetime | None) -> datetime | None:
    """The weekly token expiry that makes a restart now need a 2FA login, or None when IBC's RESTART
    keeps the session: close before the expiry, or after it while the Gateway's session (up since
    ``up_since``; None: unknown) predates it."""
    coming = Schedule.next_relogin(now)
    if coming - now <= RESTART_MARGIN:
        return coming
    last = Schedule.next_relogin(coming - timedelta(days=7, seconds=1))
    if (up_since is not None and up_since < last) or (up_since is None and now - last < UNKNOWN_SESSION):
        return last
    return None


def parse_days(value: str | list[str]) -> frozenset[int]:
    """'daily', 'weekdays', 'weekends' or a list of 'mon'..'sun'; ValueError saying what is expected."""
    named = {"daily": EVERY_DAY, "weekdays": frozenset(range(5)), "weekends": frozenset({5, 6})}
    if isinstance(value, str) and value.lower() in named:
        return named[value.lower()]
    index = {name: i for names in (DAY_NAMES, FULL_DAY_NAMES) for i, name in enumerate(names)}
    if isinstance(value, list) and value and all(isinstance(d, str) and d.lower() in index for d in value):
        return frozenset(index[d.lower()] for d in value)
    raise ValueError("'daily', 'weekdays', 'weekends' or a list of day names (mon, tue, ...)")


WINDOW_KEYS = ("name", "days", "start", "end", "tz", "kind")
WINDOW_SHAPE = "a window {name, days, start: 'HH:MM', end: 'HH:MM', tz, kind}"


def zone_name(value: Any) -> str:
    """A time zone name zoneinfo knows; ValueError saying what is expected."""
    try:
        ZoneInfo(value if isinstance(value, str) else "")
    except (ValueError, OSError, ZoneInfoNotFoundError):
        raise ValueError("a time zone name such as America/New_York or UTC") from None
    return str(value)


# A naive local time: fromisoformat alone also takes '0900', '09.00', 'T0900' and '0900Z' (a
# time with its own zone, which the window's other end cannot even be compared with).
HH_MM = re.compile(r"([01]\d|2[0-3]):[0-5]\d", re.ASCII)
TIMES = " with start and end from '00:00' to '23:59'"


def _hh_mm(value: Any) -> time:
    if not isinstance(value, str) or not HH_MM.fullmatch(value):
        raise ValueError(f"not HH:MM: {value!r}")
    return time(int(value[:2]), int(value[3:]))


def parse_window(v: Any) -> Window:
    """A window as a config file gives it: {name, days, start: 'HH:MM', end: 'HH:MM', tz, kind},
    days and kind may be left out; ValueError saying what is expected."""
    if not isinstance(v, dict) or not {"name", "start", "end", "tz"} <= v.keys() or not v.keys() <= set(WINDOW_KEYS):
        raise ValueError(WINDOW_SHAPE)
    try:
        start, end = _hh_mm(v["start"]), _hh_mm(v["end"])
    except ValueError:
        raise ValueError(WINDOW_SHAPE + TIMES) from None
    if start == end:  # it would be read as a whole day: every stop expected, no outage ever
        raise ValueError(f"a window that ends at another time than it starts ({v['name']!r} starts and ends at "
                         f"{v['start']}; one across midnight ends before it starts, e.g. start '23:00', end '03:00')")
    try:
        days = parse_days(v.get("days", "daily"))
    except ValueError:
        raise ValueError(WINDOW_SHAPE + " with days 'daily', 'weekdays' or a list of mon..sun") from None
    kinds = [k.value for k in WindowKind]
    if v.get("kind", "other") not in kinds:
        raise ValueError(f"a window kind: one of {', '.join(kinds)}")
    if not isinstance(v["name"], str) or not v["name"].strip():
        raise ValueError("a non-empty string")
    return Window(v["name"], start, end, zone_name(v["tz"]), days, WindowKind(v.get("kind", "other")))


@dataclass(frozen=True)
class Recurring:
    """A time of day on some weekdays, in its own zone (a scheduled drill): ``days`` Monday = 0."""

    at: time
    tz: str
    days: frozenset[int] = EVERY_DAY

    def next_after(self, after: datetime) -> datetime:
        """The first occurrence strictly after ``after``, in UTC (a week holds at least one)."""
        zone = ZoneInfo(self.tz)
        day = after.astimezone(zone).date()
        for n in range(9):
            local = datetime.combine(day + timedelta(days=n), self.at, tzinfo=zone)
            if local.weekday() in self.days and (at := local.astimezone(UTC)) > after:
                return at
        raise AssertionError("days is never empty")

    @property
    def label(self) -> str:
        names = "daily" if self.days == EVERY_DAY else ", ".join(DAY_NAMES[d] for d in sorted(self.days))
        return f"{names} at {self.at:%H:%M} {self.tz}"


RECURRING_KEYS = ("days", "time", "tz")
RECURRING_SHAPE = "a schedule {days, time: 'HH:MM', tz}"


def parse_recurring(v: Any) -> Recurring:
    """A schedule as a config file gives it: {days, time: 'HH:MM', tz}, days may be left out
    (daily); ValueError saying what is expected."""
    if not isinstance(v, dict) or not {"time", "tz"} <= v.keys() or not v.keys() <= set(RECURRING_KEYS):
        raise ValueError(RECURRING_SHAPE + ", e.g. {days: weekdays, time: '17:30', tz: America/New_York}")
    try:
        at = _hh_mm(v["time"])
    except ValueError:
        raise ValueError(RECURRING_SHAPE + " with a time from '00:00' to '23:59'") from None
    try:
        days = parse_days(v.get("days", "daily"))
    except ValueError:
        raise ValueError(RECURRING_SHAPE + " with days 'daily', 'weekdays', 'weekends' or a list of mon..sun") from None
    try:
        tz = zone_name(v["tz"])
    except ValueError as e:
        raise ValueError(f"{RECURRING_SHAPE} with tz {e}") from None
    return Recurring(at, tz, days)
