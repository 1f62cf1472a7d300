"""Informational commands: one small async function each."""

from __future__ import annotations

from datetime import UTC, datetime

from telegram import Update
from telegram.ext import ContextTypes

from bot import report
from bot.config import RUN_ID, GatewayConfig
from bot.health import Health, probe
from bot.ibkr.errors import Layer
from bot.jobs import Job
from bot.watch.alerts import duration
from bot.watch.state import Phase
from bot.watch.watcher import Watch, health_from_state
from handlers.context import (
    HELP,
    UNKNOWN_BUTTON,
    BadArgument,
    chat_services,
    command_of,
    gateway_arg,
    no_args,
    number_arg,
    quoted,
    reply,
    usage,
    who,
)
from handlers.results import send_report
from storage import OutMessage, RunRecord


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    no_args(chat_services(context), "start", context.args or [])
    gw = chat_services(context).core.config.gateway()
    await reply(update, f"gwbot tests and watches the IB Gateway {gw.name} ({gw.host}:{gw.port}). "
                        "Try /status, or /checklist for the whole Task 5.1 run. /help lists every command.")


async def help_(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    no_args(chat_services(context), "help", context.args or [])
    names = chat_services(context).core.config.gateway_names
    lines = [f"/{name} - {text}" for name, _, text in HELP]
    if len(names) > 1:
        lines.append(f"Commands take an optional Gateway name: {', '.join(names)} (default {names[0]}).")
    await reply(update, "\n".join(lines))


async def status(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    services = chat_services(context)
    gw = gateway_arg(services, "status", context.args or [])
    job = services.core.jobs.current(gw.name)
    health = _watched(services.core.watch, gw) if job is None else None
    if health is None:  # a check runs (its live view), or the watch is not running or not connected yet
        health = await (probe(gw, job.live) if job else services.probes.health(gw))
    last = await services.core.repo.latest_run(gw.name)
    lines = [*_health_lines(health), _job_line(job)]
    if last is not None and (job is None or last.id != job.run_id):
        ago = _ago(last.ended_at or last.started_at)
        lines.append(f"Last run: #{last.id} {last.kind} {report.status_mark(last.status)} {last.status.upper()} "
                     f"({last.checks_passed}/{last.checks_total} checks passed), {ago}")
    await reply(update, "\n".join(lines))


def _watched(watch: Watch | None, gw: GatewayConfig) -> Health | None:
    """The watch's state, at once (no probe connection): None when there is no watch or it has no verdict yet."""
    if watch is None or gw.name not in watch.watchers:
        return None
    state = watch.watcher(gw.name).state
    return None if state.phase is Phase.STARTING else health_from_state(gw, state)


SOURCES = {"live": " (from the running check)", "watch": " (from the watch)"}


def _health_lines(h: Health) -> list[str]:
    gw = h.gateway
    ok = h.error is None and h.link_ok is not False and h.farms_ok is not False
    head = f"{'🟢' if ok else '🔴'} {gw.name} {gw.host}:{gw.port}" + SOURCES.get(h.source or "", "")
    marks = {True: "✅", False: "❌", None: "·"}
    layers = [Layer.TCP_PORT, Layer.API_HANDSHAKE, Layer.API_READY, Layer.IB_LINK, Layer.DATA_FARMS]
    lines = [head, "  ".join(f"{marks[h.reached(layer)]} {layer.label}" for layer in layers)]
    if h.server_version is not None:
        detail = f"Server version {h.server_version}, accounts {', '.join(h.accounts)}"
        if h.uptime is not None:
            detail += f", up {duration(h.uptime)}"
        if h.last_rtt is not None:
            detail += f", RTT {h.last_rtt * 1000:.1f} ms"
        lines.append(detail)
    if h.error:
        lines.append(f"Problem: {h.error}")
    return lines


def _job_line(job: Job | None) -> str:
    if job is None:
        return "Running now: nothing"
    return (f"Running now: {job.what} (run #{job.run_id}) started by {job.request.started_by} "
            f"{_ago(job.started_at)}; /cancel stops it")


async def history(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    no_args(chat_services(context), "history", context.args or [])
    runs = await chat_services(context).core.repo.list_runs(limit=10)
    if not runs:
        await reply(update, "No runs yet. /checklist runs the whole checklist.")
        return
    lines = [f"#{r.id} {report.status_mark(r.status)} {r.kind} on {r.gateway}: {r.status}, "
             f"{r.checks_passed}/{r.checks_total} passed, {r.started_at:%Y-%m-%d %H:%M} UTC" for r in runs]
    await reply(update, "\n".join(["Recent runs (/report N for one):", *lines]))


async def report_(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    run = await _run_arg(context, "report")
    assert update.effective_chat is not None
    core = chat_services(context).core
    await send_report(core.outbox, update.effective_chat.id, run, await report.compared(core.repo, run))


async def logs(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    run = await _run_arg(context, "logs")
    assert update.effective_chat is not None
    if not run.logs:
        await reply(update, f"Run #{run.id} has no log lines.")
        return
    log_file = OutMessage.document(report.log_text(run).encode(), f"gwbot-run-{run.id}.log",
                                   f"Log of run #{run.id}: {len(run.logs)} lines")
    await chat_services(context).core.outbox.enqueue(update.effective_chat.id, [log_file])


async def _run_arg(context: ContextTypes.DEFAULT_TYPE, command: str) -> RunRecord:
    """The run named by /report or /logs (default: the latest); BadArgument says why there is none."""
    repo = chat_services(context).core.repo
    args = context.args or []
    wrong = usage(chat_services(context), command, f"/{command} 12")
    if len(args) > 1:
        raise wrong
    latest = None if args else await repo.latest_run()
    if not args and latest is None:
        raise BadArgument("No runs yet. /checklist runs the whole checklist.")
    run_id = latest.id if latest else int(number_arg(args[0], RUN_ID, str(wrong)))  # RUN_ID is an integer range
    run = await repo.get_run(run_id)
    if run is None:
        raise BadArgument(f"No run #{run_id}. /history lists the runs.")
    return run


async def cancel(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    services = chat_services(context)
    gw = gateway_arg(services, "cancel", context.args or [])
    services.prompts.withdraw(gw.name, f"Cancelled by {who(update)} with /cancel.")
    job = await services.core.jobs.cancel(gw.name)
    if job is None:
        await reply(update, f"Nothing is running on {gw.name}.")
    else:
        await reply(update, f"Cancelled {job.what} (run #{job.run_id}) started by {job.request.started_by}.")


async def unknown(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    command = command_of(update.effective_message)
    name = "" if command is None else command[0] + (f"@{command[1]}" if command[1] else "")
    await reply(update, f"Unknown command {quoted(name)}. /help lists what I can do.")


async def unknown_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A press whose data no gwbot button carries (forged, or some other bot's): said so, never an error."""
    assert update.callback_query is not None
    await update.callback_query.answer(UNKNOWN_BUTTON)


def _ago(at: datetime) -> str:
    return f"{duration((datetime.now(UTC) - at).total_seconds())} ago"
