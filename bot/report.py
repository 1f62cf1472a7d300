"""A stored run, rendered: the seed's markdown Report Template, and a short summary for chat.

Both come from the stored :class:`storage.RunRecord`, never from live objects, so a report can
be rebuilt for any past run, including one that was interrupted half-way.
"""

from __future__ import annotations

from datetime import datetime

from bot.checks import CHECK_NAMES, CHECKS, Check, check_type, drill
from bot.checks.base import FAIL, PASS, status_mark
from storage import CheckStatus, Repository, RunRecord, RunStatus

__all__ = ["compared", "log_text", "markdown", "status_mark", "summary"]

LOG_EXCERPT_LINES = 25
NOTABLE_LEVELS = ("WARNING", "ERROR", "CRITICAL")


def _duration(run: RunRecord) -> float | None:
    return (run.ended_at - run.started_at).total_seconds() if run.ended_at else None


def _type(name: str) -> type[Check]:
    """The check that stored a record; the plain base for one this gwbot does not know."""
    try:
        return check_type(name)
    except KeyError:
        return Check


async def compared(repo: Repository, run: RunRecord) -> str:
    """The run's drill beside this Gateway's earlier drills, in words ("" when it measured no outage):
    read from storage here, as a run knows nothing of the others; summary and report show it."""
    check = run.check(drill.DrillCheck.name)
    this = check.metric(drill.OUTAGE) if check is not None else None
    if this is None:
        return ""
    earlier = await repo.history.earlier(run.gateway, drill.DrillCheck.name, drill.OUTAGE, run.id, drill.COMPARE_WITH)
    return drill.compared(this, earlier)


def summary(run: RunRecord, compared: str = "") -> str:
    """The short plain-text result for chat and terminal; ``compared``: from :func:`compared`."""
    took = _duration(run)
    head = (f"{status_mark(run.status)} {run.status.upper()}: {run.kind} on {run.gateway}, run #{run.id}"
            + (f", {took:.0f} s" if took is not None else ""))
    return "\n".join([head, *(_type(c.name).summary_line(c) for c in run.checks),
                      *([f"Compared: {compared}"] if compared else [])])


def _sections(run: RunRecord) -> list[str]:
    """Each check's lines under its section, sections in checklist order; an empty section is left out."""
    sections: dict[str, list[str]] = {}
    for cls in CHECKS:
        if cls.section is not None:
            sections.setdefault(cls.section, []).extend(cls.report_lines(run, run.check(cls.name)))
    return [line for title, lines in sections.items() if lines for line in ("", f"**{title}:**", *lines)]


def _issues(run: RunRecord) -> list[str]:
    lines = [f"- {c.name}: {c.status}: {c.error}" for c in run.checks if not c.passed and c.error]
    lines += [f"- {c.name}: {c.status}" for c in run.checks if not c.passed and not c.error]
    if run.status in (RunStatus.INTERRUPTED, RunStatus.RUNNING):
        lines.append(f"- The run is {run.status}: gwbot stopped before it finished")
    return lines or ["- None"]


def _logs(run: RunRecord) -> list[str]:
    # A check that provokes errors on purpose (the error matrix) would bury the ones that matter.
    provokers = [c for c in run.checks if _type(c.name).provokes_errors]

    def provoked(at: datetime) -> bool:
        return any(c.started_at <= at <= (c.ended_at or at) for c in provokers)

    notable = [e for e in run.logs if e.level in NOTABLE_LEVELS and not provoked(e.at)]
    skipped = sum(1 for e in run.logs if e.level in NOTABLE_LEVELS and provoked(e.at))
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
        hints += [h for h in c.hints if not c.passed and h not in hints]
    for cls in CHECKS:
        hints += cls.recommendations(run, run.check(cls.name))
    # A check standing in for another (the drill for the guided reconnect) does that step.
    stand_ins = {c.stands_in_for: c.name for c in CHECKS if c.stands_in_for is not None}
    missing = [n for n in CHECK_NAMES if n not in stand_ins.values()
               and run.check(n) is None and (n not in stand_ins or run.check(stand_ins[n]) is None)]
    if missing and run.kind == "checklist":
        hints.append(f"Complete the remaining checks: {', '.join(missing)}")
    hints += _status_advice(run, bool(hints))
    return [f"- {h}" for h in hints] or ["- None: the connection lifecycle behaved as expected"]


def _status_advice(run: RunRecord, advised: bool) -> list[str]:
    """What a run that did not pass asks for, even when no check gave a hint: never "None"."""
    again = f"`gwbot check {'all' if run.kind == 'checklist' else run.kind}`"
    if run.status == RunStatus.RUNNING:
        return [f"Run #{run.id} is still running: this report is not final; look again when it ends"]
    if run.status == RunStatus.INTERRUPTED:
        when = f" at {run.ended_at:%H:%M:%S} UTC" if run.ended_at else ""
        return [f"Run #{run.id} was interrupted (the gwbot running it stopped{when}); run it again for a "
                f"complete result: {again}"]
    if run.status == RunStatus.CANCELLED:
        return [f"Run #{run.id} was cancelled before it finished; run it again for a complete result: {again}"]
    if run.status != RunStatus.PASSED and not advised:
        failed = [c.name for c in run.checks if c.status not in (CheckStatus.PASSED, CheckStatus.SKIPPED)] or [run.kind]
        return [f"See Errors/Issues above and the full log (`gwbot logs {run.id}`) for what stopped "
                f"{', '.join(failed)}; fix it, then run it again: {again}"]
    return []


def log_text(run: RunRecord) -> str:
    """Every log line of a run, one per line: `gwbot logs` and the chat's /logs file."""
    return "\n".join(f"{e.at:%Y-%m-%d %H:%M:%S} {e.level:<7} {e.logger}: {e.message}" for e in run.logs)


def markdown(run: RunRecord, compared: str = "") -> str:
    """The seed's Report Template, filled with this run's measured numbers; ``compared``: from :func:`compared`."""
    took = _duration(run)
    verdict = f"{PASS} PASSED" if run.status == RunStatus.PASSED else f"{FAIL} {run.status.upper()}"
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
        *_sections(run),
        *(["", f"**Compared with earlier drills:** {compared}"] if compared else []),
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
