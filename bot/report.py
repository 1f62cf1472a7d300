"""A stored run, rendered: the seed's markdown Report Template, and a short summary for chat.

Both come from the stored :class:`storage.RunRecord`, never from live objects, so a report can
be rebuilt for any past run, including one that was interrupted half-way.
"""

from __future__ import annotations

import statistics
from datetime import datetime

from storage import CheckRecord, RunRecord

PASS, FAIL, NOT_RUN = "✅", "❌", "⏸️"
SEED_SOAK_SECONDS = 600  # "Connection stays stable for 10+ minutes"
LOG_EXCERPT_LINES = 25
HINT_PREFIX = "Hint: "
LOCAL_DISCONNECT = "local disconnect"  # the client's own goodbye at the end of a check: not a drop


def _mark(ok: bool | None) -> str:
    return NOT_RUN if ok is None else PASS if ok else FAIL


def _metric(check: CheckRecord | None, name: str) -> float | None:
    if check is None:
        return None
    return next((m.value for m in check.metrics if m.name == name), None)


def _check(run: RunRecord, name: str) -> CheckRecord | None:
    """The last attempt of a check in this run."""
    found = [c for c in run.checks if c.name == name]
    return found[-1] if found else None


def _passed(check: CheckRecord | None) -> bool | None:
    return None if check is None else check.status == "passed"


def _duration(run: RunRecord) -> float | None:
    return (run.ended_at - run.started_at).total_seconds() if run.ended_at else None


def status_mark(status: str) -> str:
    return {"passed": PASS, "running": "⏳", "cancelled": "🚫", "interrupted": "⚠️"}.get(status, FAIL)


def check_line(c: CheckRecord) -> str:
    """One line per check with its key figures: the unit of every summary."""
    m = {x.name: x.value for x in c.metrics}
    figures = ""
    if c.name == "port" and "tcp_connect" in m:
        figures = f"TCP connect {m['tcp_connect']:.1f} ms"
    elif c.name == "connect" and "connect" in m:
        figures = f"server version {m.get('server_version', 0):.0f}, connected in {m['connect']:.0f} ms"
    elif c.name == "soak" and "duration" in m:
        figures = f"{m['duration']:.0f} s, {m.get('heartbeats', 0):.0f} heartbeats"
        if "rtt_median" in m:
            figures += f", RTT median {m['rtt_median']:.1f} ms, p95 {m['rtt_p95']:.1f} ms, max {m['rtt_max']:.1f} ms"
        figures += f", {m.get('missed_heartbeats', 0):.0f} missed, {m.get('drops', 0):.0f} drops"
    elif c.name == "disconnect" and "disconnect" in m:
        figures = f"clean in {m['disconnect']:.1f} ms"
    elif c.name == "reconnect" and "back_to_reconnected" in m:
        figures = (f"drop seen {m.get('prompt_to_drop', 0):.2f} s after the prompt; reconnected "
                   f"{m['back_to_reconnected']:.2f} s after the Gateway was back, attempt {m['reconnect_attempts']:.0f}")
    elif c.name == "errors" and "rows" in m:
        figures = f"{m['rows_ok']:.0f}/{m['rows']:.0f} error cases handled as expected"
    text = f"{status_mark(c.status)} {c.name}: {c.status}"
    if figures:
        text += f", {figures}"
    if c.error and c.status != "passed":
        text += f"\n    {c.error}"
    return text


def summary(run: RunRecord) -> str:
    """The short plain-text result for chat and terminal."""
    took = _duration(run)
    head = (f"{status_mark(run.status)} {run.status.upper()}: {run.kind} on {run.gateway}, run #{run.id}"
            + (f", {took:.0f} s" if took is not None else ""))
    return "\n".join([head, *(check_line(c) for c in run.checks)])


def _soak_lines(run: RunRecord) -> list[str]:
    soak = _check(run, "soak")
    seconds = _metric(soak, "duration")
    if soak is None:
        return [f"- {_mark(None)} Stayed connected for 10+ minutes"]
    if seconds is None:
        line = f"- {_mark(False)} Stayed connected for 10+ minutes" + _unfinished_soak(soak)
    elif seconds >= SEED_SOAK_SECONDS:
        line = f"- {_mark(_passed(soak))} Stayed connected for 10+ minutes ({seconds / 60:.1f} min)"
    else:
        line = (f"- {_mark(_passed(soak))} Stayed connected for {seconds:.0f} s "
                f"(shortened soak; the checklist asks for 10+ minutes)")
    return [line, *_connection_events(run, soak)]


def _unfinished_soak(soak: CheckRecord) -> str:
    """What a soak that never stored its result did get to measure: its samples, kept as taken."""
    if soak.ended_at is None:
        return ""
    text = f": {soak.status} after {(soak.ended_at - soak.started_at).total_seconds():.0f} s"
    if soak.series:
        rtts = [rtt * 1000 for _, rtt in soak.series if rtt is not None]
        text += f"; {len(soak.series)} heartbeats stored"
        if rtts:
            text += f" (RTT median {statistics.median(rtts):.1f} ms, max {max(rtts):.1f} ms)"
        text += f", {len(soak.series) - len(rtts)} missed"
    return text


# What a person needs to see of the connection's life during a soak: the drops and what followed.
CONNECTION_EVENTS = ("disconnected", "reconnected", "reconnect_gave_up")


def _connection_events(run: RunRecord, check: CheckRecord) -> list[str]:
    def during(at: datetime) -> bool:
        return check.started_at <= at and (check.ended_at is None or at <= check.ended_at)

    return [f"  - {e.at:%H:%M:%S} UTC: {e.message}" for e in run.events
            if e.kind in CONNECTION_EVENTS and during(e.at) and f"({LOCAL_DISCONNECT})" not in e.message]


def _reconnect_lines(run: RunRecord) -> list[str]:
    rc = _check(run, "reconnect")
    within = float(run.config.get("checks", {}).get("reconnect_within", 30))
    detected, back = _metric(rc, "prompt_to_drop"), _metric(rc, "back_to_reconnected")
    ran = rc is not None
    return [
        f"- {_mark(detected is not None if ran else None)} Detected Gateway shutdown"
        + (f" ({detected:.2f} s after the prompt)" if detected is not None else ""),
        f"- {_mark(back is not None and back <= within if ran else None)} Reconnected within {within:g} seconds"
        + (f" ({back:.2f} s after the Gateway was back, {_metric(rc, 'reconnect_attempts'):.0f} attempt(s))"
           if back is not None else ""),
        f"- {_mark((_passed(rc) if back is not None else False) if ran else None)} No errors during reconnection",
    ]


def _issues(run: RunRecord) -> list[str]:
    lines = [f"- {c.name}: {c.status}: {c.error}" for c in run.checks if c.status != "passed" and c.error]
    lines += [f"- {c.name}: {c.status}" for c in run.checks if c.status != "passed" and not c.error]
    if run.status in ("interrupted", "running"):
        lines.append(f"- The run is {run.status}: gwbot stopped before it finished")
    return lines or ["- None"]


def _error_matrix(run: RunRecord) -> list[str]:
    errors = _check(run, "errors")
    if errors is None:
        return []
    rows = [f"- {f}" for f in errors.findings if not f.startswith(HINT_PREFIX)]
    return ["", "**Error Handling Test:**", *rows] if rows else []


def _logs(run: RunRecord) -> list[str]:
    # The error matrix provokes errors on purpose; they would bury the ones that matter.
    matrix = _check(run, "errors")

    def provoked(at: datetime) -> bool:
        return matrix is not None and matrix.started_at <= at <= (matrix.ended_at or at)

    notable = [e for e in run.logs if e.level in ("WARNING", "ERROR", "CRITICAL") and not provoked(e.at)]
    skipped = sum(1 for e in run.logs if e.level in ("WARNING", "ERROR", "CRITICAL") and provoked(e.at))
    chosen = (notable or [e for e in run.logs if not provoked(e.at)])[-LOG_EXCERPT_LINES:]
    lines = []
    if chosen:
        body = [f"{entry.at:%H:%M:%S} {entry.level:<7} {entry.logger}: {entry.message}" for entry in chosen]
        lines = ["```", *body, "```"]
    if skipped:
        lines.append(f"({skipped} warning/error lines provoked on purpose by the error-handling matrix are left "
                     f"out; the full log has them: `gwbot logs {run.id}`, or /logs {run.id} in chat)")
    return lines or ["(no log lines recorded)"]


def _recommendations(run: RunRecord) -> list[str]:
    hints: list[str] = []
    for c in run.checks:
        for f in c.findings:
            if f.startswith(HINT_PREFIX) and c.status != "passed" and f[len(HINT_PREFIX):] not in hints:
                hints.append(f[len(HINT_PREFIX):])
    soak_seconds = _metric(_check(run, "soak"), "duration")
    if soak_seconds is not None and soak_seconds < SEED_SOAK_SECONDS:
        hints.append("Run the full 10-minute soak (`gwbot check soak`) before relying on this Gateway")
    missing = [n for n in ("port", "connect", "soak", "disconnect", "reconnect", "errors")
               if _check(run, n) is None]
    if missing and run.kind == "checklist":
        hints.append(f"Complete the remaining checks: {', '.join(missing)}")
    hints += _status_advice(run, bool(hints))
    return [f"- {h}" for h in hints] or ["- None: the connection lifecycle behaved as expected"]


def _status_advice(run: RunRecord, advised: bool) -> list[str]:
    """What a run that did not pass asks for, even when no check gave a hint: never "None"."""
    again = f"`gwbot check {'all' if run.kind == 'checklist' else run.kind}`"
    if run.status == "running":
        return [f"Run #{run.id} is still running: this report is not final; look again when it ends"]
    if run.status == "interrupted":
        when = f" at {run.ended_at:%H:%M:%S} UTC" if run.ended_at else ""
        return [f"Run #{run.id} was interrupted (the gwbot running it stopped{when}); run it again for a "
                f"complete result: {again}"]
    if run.status == "cancelled":
        return [f"Run #{run.id} was cancelled before it finished; run it again for a complete result: {again}"]
    if run.status != "passed" and not advised:
        failed = [c.name for c in run.checks if c.status not in ("passed", "skipped")] or [run.kind]
        return [f"See Errors/Issues above and the full log (`gwbot logs {run.id}`) for what stopped "
                f"{', '.join(failed)}; fix it, then run it again: {again}"]
    return []


def log_text(run: RunRecord) -> str:
    """Every log line of a run, one per line: `gwbot logs` and the chat's /logs file."""
    return "\n".join(f"{e.at:%Y-%m-%d %H:%M:%S} {e.level:<7} {e.logger}: {e.message}" for e in run.logs)


def markdown(run: RunRecord) -> str:
    """The seed's Report Template, filled with this run's measured numbers."""
    took = _duration(run)
    verdict = f"{PASS} PASSED" if run.status == "passed" else f"{FAIL} {run.status.upper()}"
    gw = run.config.get("gateways", [{}])
    target = next((g for g in gw if g.get("name") == run.gateway), gw[0] if gw else {})
    lines = [
        "## Results",
        "",
        f"_Run #{run.id} ({run.kind}) on Gateway {run.gateway} "
        f"({target.get('host', '?')}:{target.get('port', '?')}), started {run.started_at:%Y-%m-%d %H:%M:%S} UTC "
        f"by {run.started_by} from {run.origin}" + (f", took {took:.0f} s_" if took is not None else "_"),
        "",
        f"**Status:** {verdict}",
        "",
        "**Connection Test:**",
        f"- {_mark(_passed(_check(run, 'connect')))} Connected successfully"
        + (f" ({line})" if (line := _connect_detail(run)) else ""),
        *_soak_lines(run),
        f"- {_mark(_passed(_check(run, 'disconnect')))} Disconnected gracefully",
        "",
        "**Auto-Reconnect Test:**",
        *_reconnect_lines(run),
        *_error_matrix(run),
        "",
        "**Errors/Issues:**",
        *_issues(run),
        "",
        "**Logs:**",
        *_logs(run),
        "",
        "**Recommendations:**",
        *_recommendations(run),
        "",
    ]
    return "\n".join(lines)


def _connect_detail(run: RunRecord) -> str:
    c = _check(run, "connect")
    version, ms = _metric(c, "server_version"), _metric(c, "connect")
    if version is None or ms is None:
        return ""
    accounts = next((f.split(": ", 1)[1] for f in c.findings if f.startswith("Managed accounts: ")), "")
    return f"server version {version:.0f}, accounts {accounts}, {ms:.0f} ms"
