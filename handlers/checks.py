"""Commands that run checks. Each starts a background job and answers at once."""

from __future__ import annotations

import logging
from functools import partial

from telegram import Update
from telegram.ext import ContextTypes

from bot import report
from bot.checks import CHECK_NAMES
from bot.checks.base import OperatorReply, Reply
from bot.checks.drill import DrillCheck
from bot.checks.soak import SoakOptions
from bot.config import SOAK_SECONDS, Range
from bot.expected_stops import watch_expects_stops
from bot.jobs import Busy, Job
from bot.runner import RunOutcome, RunRequest
from handlers.context import BadArgument, chat_services, gateway_arg, number_arg, reply, who
from handlers.operator import PREFIX, ChatOperator
from handlers.progress import ProgressMessage
from handlers.results import post_results
from storage import OutMessage

log = logging.getLogger(__name__)
SOAK_MINUTES = Range(SOAK_SECONDS.low / 60, SOAK_SECONDS.high / 60, unit="minutes")  # chat speaks minutes


async def soak(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    services = chat_services(context)
    args = context.args or []
    minutes = [a for a in args if a not in services.core.config.gateway_names]
    usage = (f"Usage: /soak [minutes] [Gateway], minutes from {SOAK_MINUTES.low:g} to {SOAK_MINUTES.high:g}, "
             "e.g. /soak 10")
    if len(minutes) > 1:
        raise BadArgument(usage)
    seconds = number_arg(minutes[0], SOAK_MINUTES, usage) * 60 if minutes else None
    await _start(update, context, ("soak",), soak_seconds=seconds)


async def drill(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The reconnect test through IBC's RESTART; refused at once for a Gateway without IBC."""
    gw = gateway_arg(chat_services(context), "drill", context.args or [])
    if not DrillCheck.applies(gw):
        raise BadArgument(f"/drill needs IBC's command server on {gw.name}: add ibc: {{port: 7462}} under it in "
                          f"the config (CommandServerPort in IBC's config.ini), or use /reconnect {gw.name}")
    await _start(update, context, ("drill",))


# [Done] / [Abort] of operator prompt N: "op:N:done"; anything else is no button gwbot made.
BUTTON_PATTERN = rf"^{PREFIX}:[0-9]{{1,18}}:({'|'.join(Reply)})$"


async def on_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """[Done] / [Abort] on an operator question: resolve it if still open, else say it is over."""
    query = update.callback_query
    assert query is not None and query.data is not None and update.effective_chat is not None
    _, prompt_id, choice = query.data.split(":")  # BUTTON_PATTERN let only well-formed data in
    reply = OperatorReply(Reply(choice), by=who(update))
    if chat_services(context).prompts.answer(int(prompt_id), update.effective_chat.id, reply):
        log.info("operator %s pressed %s", reply.by, reply.reply)
        await query.answer("Got it.")
    else:
        await query.answer("This step is already over.")


async def _start(update: Update, context: ContextTypes.DEFAULT_TYPE, checks: tuple[str, ...], *,
                 soak_seconds: float | None = None) -> None:
    services = chat_services(context)
    args = [a for a in (context.args or []) if a in services.core.config.gateway_names or checks != ("soak",)]
    gw = gateway_arg(services, "checklist" if checks == CHECK_NAMES else checks[0], args)
    assert update.effective_chat is not None
    chat_id = update.effective_chat.id
    request = RunRequest(checks, started_by=who(update), origin=f"telegram chat {chat_id}", gateway=gw.name,
                         options=(SoakOptions(soak_seconds),))
    progress = ProgressMessage(context.bot, chat_id, request.kind, 0, services.core.config.telegram.progress_interval)
    operator = ChatOperator(context.bot, chat_id, services.prompts, gw.name)

    async def done(job: Job, outcome: RunOutcome | None, error: BaseException | None) -> None:
        await progress.close()
        run = await services.core.repo.get_run(job.run_id)
        if run is None:
            return
        first: tuple[OutMessage, ...] = ()
        if error is not None and run.status != "cancelled":
            first = (OutMessage.plain(f"⚠️ Run #{job.run_id} stopped with an internal error "
                                      f"({type(error).__name__}); it is logged."),)
        await post_results(services.core.outbox, chat_id, run, first, await report.compared(services.core.repo, run))

    try:
        job = await services.core.jobs.start(request, operator, progress=progress, on_event=operator.on_event,
                                             on_done=done,
                                             on_step=watch_expects_stops(services.core.config, services.core.watch, gw))
    except Busy as busy:
        await reply(update, _busy_text(gw.name, busy.job))
        return
    progress.run_id = job.run_id
    await reply(update, f"▶️ {request.kind} on {gw.name} ({gw.host}:{gw.port}) started by {request.started_by}: "
                        f"run #{job.run_id}. /cancel stops it.")


# The commands that run one check, or the whole checklist, with no arguments of their own.
connect = partial(_start, checks=("connect",))
disconnect = partial(_start, checks=("disconnect",))
reconnect = partial(_start, checks=("reconnect",))
errors = partial(_start, checks=("errors",))
checklist = partial(_start, checks=CHECK_NAMES)


def _busy_text(gateway: str, job: Job | None) -> str:
    if job is None:
        return f"A run on {gateway} is starting right now; /status shows it."
    return (f"{job.what.capitalize()} on {gateway} is already running: run #{job.run_id}, started by "
            f"{job.request.started_by} at {job.started_at:%H:%M:%S} UTC. One check at a time per Gateway; "
            "/cancel stops it.")
