"""Charts as PNG: the soak's heartbeat RTT (drops and missed heartbeats marked), a drill's stage timeline."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # headless: no display on a server, and never a GUI event loop

from matplotlib.figure import Figure

from bot.checks.drill import OUTAGE, Stage
from storage import CheckRecord


def soak_chart(check: CheckRecord, title: str = "") -> bytes:
    """PNG bytes. Uses Figure directly (not pyplot), so nothing global is kept between charts."""
    fig = Figure(figsize=(8, 3.2), dpi=100)
    ax = fig.add_subplot()
    answered = [(t, rtt * 1000) for t, rtt in check.series if rtt is not None]
    missed = [t for t, rtt in check.series if rtt is None]
    if answered:
        xs, ys = zip(*answered, strict=True)
        ax.plot(xs, ys, marker=".", linewidth=1, label="heartbeat RTT")
    for i, t in enumerate(missed):
        ax.axvline(t, color="red", linestyle="--", linewidth=1, label="missed / drop" if i == 0 else None)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("RTT (ms)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_title(title or f"Soak: {check.status}")
    if answered or missed:
        ax.legend(loc="upper right")
    return png(fig)


def drill_chart(check: CheckRecord, title: str = "") -> bytes:
    """PNG bytes of :func:`drill_figure`."""
    return png(drill_figure(check, title))


def drill_figure(check: CheckRecord, title: str = "") -> Figure:
    """One bar per stage, from IBC accepting RESTART to that stage, in the restart's order; a stage
    never reached keeps its row, marked, so a failed drill shows where it stopped."""
    fig = Figure(figsize=(8, 3.6), dpi=100)
    ax = fig.add_subplot()
    stages = list(Stage)
    times = [check.metric(s.metric) for s in stages]
    end = max((t for t in times if t is not None), default=1.0) or 1.0
    for row, t in enumerate(times):
        if t is None:
            ax.text(0, row, "  not reached", va="center", color="red")
            continue
        ax.barh(row, t, height=0.6, color="tab:green" if stages[row] is Stage.RECONNECTED else "tab:blue")
        ax.text(t + end * 0.01, row, f"{t:.1f} s" if t >= 10 else f"{t:.2f} s", va="center", fontsize=8)
    dropped, back = check.metric(Stage.DROPPED.metric), check.metric(Stage.RECONNECTED.metric)
    if dropped is not None and back is not None:
        ax.axvspan(dropped, back, color="red", alpha=0.08, label=f"down {check.metric(OUTAGE) or back - dropped:.1f} s")
        ax.legend(loc="lower right")
    ax.set_yticks(range(len(stages)), [s.label for s in stages], fontsize=8)
    ax.invert_yaxis()  # the first stage on top
    ax.set_xlim(0, end * 1.15)
    ax.set_xlabel("seconds after IBC accepted RESTART")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title or f"Drill: {check.status}")
    return fig


def png(fig: Figure) -> bytes:
    """The figure, laid out, as PNG bytes (the soak chart and /uptime's timeline)."""
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()
