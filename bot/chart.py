"""The soak's heartbeat RTT over time as a PNG, drops and missed heartbeats marked; gwbot's one PNG writer."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # headless: no display on a server, and never a GUI event loop

from matplotlib.figure import Figure

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


def png(fig: Figure) -> bytes:
    """The figure, laid out, as PNG bytes (the soak chart and /uptime's timeline)."""
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()
