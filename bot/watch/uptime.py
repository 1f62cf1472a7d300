"""/uptime: availability over 24 h, 7 d and 30 d from stored incidents, expected windows left out.

Availability = 1 - down / watched, both counted outside IBKR's expected windows and only while
gwbot was watching (its coverage spans). Down time inside a window is still shown, as
"scheduled" (or "restart" for the Gateway's auto-restart window); a check's deliberate stop
counts nowhere.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bot.chart import Figure, png
from bot.watch.alerts import duration
from bot.watch.schedule import Schedule, WindowKind
from bot.watch.state import OutageCategory
from storage import CoverageRecord, IncidentRecord, IncidentStore

PERIODS = (("24 h", timedelta(days=1)), ("7 d", timedelta(days=7)), ("30 d", timedelta(days=30)))
# The live coverage span is marked every minute; one seen this recently is still running.
LIVE_WITHIN = timedelta(minutes=3)

Span = tuple[datetime, datetime]
# One local day of the timeline: (midnight, watched, down, expected) spans.
Day = tuple[datetime, tuple[Span, ...], tuple[Span, ...], tuple[Span, ...]]


# ------------------------------------------------------------- intervals
def merge(spans: Iterable[Span]) -> list[Span]:
    out: list[Span] = []
    for s, e in sorted(x for x in spans if x[1] > x[0]):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def intersect(a: Sequence[Span], b: Sequence[Span]) -> list[Span]:
    return merge((max(s1, s2), min(e1, e2)) for s1, e1 in a for s2, e2 in b)  # merge drops the empty ones


def subtract(a: Sequence[Span], b: Sequence[Span]) -> list[Span]:
    pieces = list(a)
    for bs, be in b:
        pieces = [p for ps, pe in pieces for p in ((ps, min(pe, bs)), (max(ps, be), pe)) if p[1] > p[0]]
    return merge(pieces)


def total(spans: Iterable[Span]) -> float:
    return sum((e - s).total_seconds() for s, e in spans)


# ------------------------------------------------------------ the figures
@dataclass(frozen=True)
class Availability:
    label: str
    start: datetime
    end: datetime
    watched: float                 # seconds watched outside expected windows
    down: float                    # seconds down outside expected windows
    expected: float = 0.0          # seconds of expected windows in the period
    by_category: dict[OutageCategory, float] = field(default_factory=dict)  # includes scheduled time

    @property
    def percent(self) -> float | None:
        return None if self.watched <= 0 else 100.0 * (1 - self.down / self.watched)


@dataclass(frozen=True)
class UptimeReport:
    gateway: str
    at: datetime
    periods: tuple[Availability, ...]
    incidents: tuple[IncidentRecord, ...]   # the last few, newest first
    days: tuple[Day, ...] = ()  # timeline
    tz: str = "UTC"

    @property
    def text(self) -> str:
        return uptime_text(self)


def _incident_span(r: IncidentRecord, now: datetime) -> Span:
    return r.started_at, min(r.ended_at or now, now)


def _watched(coverage: Sequence[CoverageRecord], now: datetime) -> list[Span]:
    return merge((c.started_at, now if now - c.seen_at <= LIVE_WITHIN else c.seen_at) for c in coverage)


def availability(label: str, start: datetime, end: datetime, incidents: Sequence[IncidentRecord],
                 coverage: Sequence[CoverageRecord], schedule: Schedule) -> Availability:
    period = [(start, end)]
    watched = intersect(_watched(coverage, end), period)
    windows = schedule.expected_between(start, end)
    expected = merge((o.start, o.end) for o in windows)
    by_category: defaultdict[OutageCategory, float] = defaultdict(float)
    down: list[Span] = []
    for r in incidents:
        if r.category == OutageCategory.TEST:
            continue
        span = intersect([_incident_span(r, end)], watched)
        outside = subtract(span, expected)
        down += outside
        by_category[OutageCategory(r.category)] += total(outside)
        for occ in windows:
            if inside := total(intersect(span, [(occ.start, occ.end)])):
                by_category[OutageCategory.RESTART if occ.window.kind is WindowKind.RESTART
                            else OutageCategory.SCHEDULED] += inside
    return Availability(label, start, end, total(subtract(watched, expected)), total(merge(down)),
                        total(intersect(expected, period)), {k: v for k, v in by_category.items() if v > 0})


async def uptime_report(store: IncidentStore, gateway: str, schedule: Schedule, now: datetime, *,
                        last: int = 5, timeline_days: int = 14, tz: str = "UTC") -> UptimeReport:
    since = now - max(d for _, d in PERIODS)
    incidents = await store.incidents(gateway, since, now)
    coverage = await store.coverage(gateway, since, now)
    periods = tuple(availability(label, now - d, now, incidents, coverage, schedule) for label, d in PERIODS)
    return UptimeReport(gateway, now, periods, tuple(reversed(incidents[-last:])),
                        _days(incidents, coverage, schedule, now, timeline_days, tz), tz)


def _days(incidents: Sequence[IncidentRecord], coverage: Sequence[CoverageRecord], schedule: Schedule,
          now: datetime, count: int, tz: str) -> tuple[Day, ...]:
    """Per local day, newest last: (midnight, watched, down, expected) spans."""
    zone = ZoneInfo(tz)
    today = now.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    watched_all = _watched(coverage, now)
    down_all = merge(_incident_span(r, now) for r in incidents if r.category != OutageCategory.TEST)
    out = []
    for i in range(count - 1, -1, -1):
        # Local midnights (wall-clock arithmetic), so a DST day is 23 or 25 hours long; in UTC from
        # here on, because Python subtracts two times of the same zone object as naive wall times.
        local = today - timedelta(days=i)
        day, nxt = local.astimezone(UTC), (local + timedelta(days=1)).astimezone(UTC)
        span = [(day, min(nxt, now))]
        expected = merge((o.start, o.end) for o in schedule.expected_between(day, nxt))
        out.append((day, tuple(intersect(watched_all, span)), tuple(intersect(down_all, intersect(watched_all, span))),
                    tuple(intersect(expected, span))))
    return tuple(out)


# ---------------------------------------------------------------- words
def uptime_text(report: UptimeReport) -> str:
    zone = ZoneInfo(report.tz)
    lines = [f"📈 {report.gateway} availability (IBKR's expected windows left out)"]
    for p in report.periods:
        if p.percent is None:
            lines.append(f"{p.label}: not watched")
            continue
        watchable = (p.end - p.start).total_seconds() - p.expected
        watched = "" if p.watched >= watchable * 0.95 else f", watched {duration(p.watched)}"
        lines.append(f"{p.label}: {p.percent:.2f} % — down {duration(p.down)}{watched}")
    longest = report.periods[-1]
    if longest.by_category:
        parts = sorted(longest.by_category.items(), key=lambda kv: -kv[1])
        lines.append(f"Down time by cause ({longest.label}): " + " · ".join(
            f"{c.value} {duration(s)}" + (" (not counted)" if c is OutageCategory.SCHEDULED else "") for c, s in parts))
    if report.incidents:
        lines.append("Last incidents:")
        for r in report.incidents:
            start = r.started_at.astimezone(zone)
            end = "ongoing" if r.ended_at is None else r.ended_at.astimezone(zone).strftime("%H:%M:%S")
            took = duration(((r.ended_at or report.at) - r.started_at).total_seconds())
            note = f", {r.expected_window}" if r.expected_window else (f", test: {r.test}" if r.test else "")
            lines.append(f"• {start:%b %d %H:%M:%S}–{end} ({took}) {r.category}{note}")
    else:
        lines.append("No incidents in 30 days.")
    return "\n".join(lines)


def timeline_png(report: UptimeReport) -> bytes:
    """A bar per day (hours across), green watched and up, red down, grey hatch expected windows."""
    fig = Figure(figsize=(8, 0.35 * len(report.days) + 1.2), dpi=100)
    ax = fig.add_subplot()
    for row, (day, watched, down, expected) in enumerate(report.days):
        def hours(spans: Sequence[Span], day: datetime = day) -> list[tuple[float, float]]:
            return [((s - day).total_seconds() / 3600, (e - s).total_seconds() / 3600) for s, e in spans]
        ax.broken_barh(hours(watched), (row - 0.4, 0.8), facecolors="#4caf50")
        ax.broken_barh(hours(expected), (row - 0.4, 0.8), facecolors="none", edgecolors="#757575", hatch="///",
                       linewidth=0)
        ax.broken_barh(hours(down), (row - 0.4, 0.8), facecolors="#e53935")
    zone = ZoneInfo(report.tz)
    ax.set_yticks(range(len(report.days)), [d.astimezone(zone).strftime("%a %d %b") for d, *_ in report.days])
    ax.set_xlim(0, 24)
    ax.set_xticks(range(0, 25, 3))
    ax.set_xlabel(f"hour ({report.tz})")
    ax.set_ylim(-0.6, len(report.days) - 0.4)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"{report.gateway}: red = down, green = up, hatched = expected window, blank = not watched")
    return png(fig)
