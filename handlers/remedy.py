"""[Restart Gateway] under a 🔴: IBC's RESTART, only after someone confirms it, never by gwbot itself.

Pressing asks in the chat ("Restart paper now? ... [Yes] [No]"); [Yes] sends the command through
IBC's command server, edits the question to say what IBC answered, and has the watch edit the
alert to say who restarted it and when. Refused, with the reason, while a check runs on that
Gateway (it stops and starts the Gateway itself), where a restart would need the weekly 2FA login,
or when IBC cannot be reached or answers ERROR. Every answer is audited. [Reconnect data] under a
farm's 🟡 works the same way with IBC's RECONNECTDATA.
"""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import ContextTypes

from bot.config import GatewayConfig
from bot.ibkr.ibc import IbcClient, IbcError, RestartAccepted
from bot.watch.alerts import AlertAction, clock
from bot.watch.schedule import NEW_YORK, restart_needs_login
from bot.watch.state import Incident
from bot.watch.watcher import GatewayWatcher, utc_now
from handlers.context import UNKNOWN_BUTTON, ChatServices, chat_services, handle
from handlers.watch import REF

log = logging.getLogger(__name__)
YES, NO = "yes", "no"
# "restart:<ref>" asks; "restart.yes:<ref>" / "restart.no:<ref>" answer the question (23 bytes at most).
# "rdata:<Gateway ref>" likewise, from a farm's 🟡 (it has no incident).
BUTTON_PATTERN = rf"^({AlertAction.RESTART}|{AlertAction.RECONNECT_DATA})(?:\.({YES}|{NO}))?:{REF}$"
DATA_QUESTION = "Reconnect {}'s data farms now? IBC has the Gateway reconnect them (Ctrl-Alt-F); the API stays up."


def restart_question(gateway: str) -> str:
    return f"Restart {gateway} now? It will be back in about a minute, no 2FA needed."


async def on_remedy_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """[Restart Gateway] asks; [Yes] restarts through IBC, [No] leaves it."""
    query = update.callback_query
    assert query is not None and query.data is not None and update.effective_chat is not None
    head, _, ref = query.data.partition(":")
    action, _, answer = head.partition(".")
    services = chat_services(context)
    watch = services.core.watch
    if action == AlertAction.RECONNECT_DATA:
        await _on_reconnect_data(update, context, ref, answer)
        return
    found = await watch.find(ref) if watch is not None else None
    if watch is None or found is None:
        await query.answer(UNKNOWN_BUTTON if watch is None else "This alert's Gateway is not watched here any more.")
        return
    gateway, key = found
    gw, watcher = services.core.config.gateway(gateway), watch.watcher(gateway)
    inc = watcher.engine.incident
    if inc is None or inc.key != key:
        await query.answer("This outage is over: nothing to restart.")
        return
    if inc.restarted_by is not None and answer != NO:
        tz = services.core.config.watch.time_zone
        await query.answer(f"Already restarted by {inc.restarted_by} at {clock(inc.restarted_at or utc_now(), tz)}.")
        return
    if answer == NO:
        await query.answer("Left as it is.")
        await query.edit_message_text(f"{restart_question(gateway)}\nNot restarted ({handle(update)} said no).")
        return
    refusal = _refusal(services, gw, watcher)
    if refusal is None and gw.ibc is None:  # the button is only offered with ibc; the config changed since
        refusal = f"{gateway} has no ibc: {{port: 7462}} in the config, so gwbot cannot reach IBC for it."
    if refusal is not None:
        await _refused(update, services, gateway, refusal, edit=bool(answer))
        return
    if not answer:
        await _ask(update, context, restart_question(gateway), AlertAction.RESTART, inc.ref)
        return
    await _restart(update, services, gw, watcher, inc)


async def _ask(update: Update, context: ContextTypes.DEFAULT_TYPE, text: str, action: AlertAction, ref: str) -> None:
    assert update.callback_query is not None and update.effective_chat is not None
    await update.callback_query.answer()
    buttons = InlineKeyboardMarkup([[InlineKeyboardButton(label, callback_data=f"{action}.{word}:{ref}")
                                     for label, word in (("Yes", YES), ("No", NO))]])
    await context.bot.send_message(update.effective_chat.id, text, reply_markup=buttons)


async def _on_reconnect_data(update: Update, context: ContextTypes.DEFAULT_TYPE, ref: str, answer: str) -> None:
    """[Reconnect data] under a farm's 🟡: IBC's RECONNECTDATA after a [Yes]."""
    query = update.callback_query
    assert query is not None
    services = chat_services(context)
    watch = services.core.watch
    gateway = watch.by_gateway_ref(ref) if watch is not None else None
    if watch is None or gateway is None:
        await query.answer("This alert's Gateway is not watched here any more.")
        return
    gw, watcher, text = services.core.config.gateway(gateway), watch.watcher(gateway), DATA_QUESTION.format(gateway)
    if not watcher.engine.broken_farms() and answer != NO:
        await query.answer("Its data farms are OK again: nothing to reconnect.")
        return
    if answer == NO:
        await query.answer("Left as it is.")
        await query.edit_message_text(f"{text}\nNot reconnected ({handle(update)} said no).")
        return
    job = services.core.jobs.current(gateway)
    refusal = f"{job.what} on {gateway} is running (run #{job.run_id}); /cancel {gateway} first." if job else None
    if refusal is None and gw.ibc is None:
        refusal = f"{gateway} has no ibc: {{port: 7462}} in the config, so gwbot cannot reach IBC for it."
    if refusal is not None:
        await _refused(update, services, gateway, refusal, edit=bool(answer), command="RECONNECTDATA", question=text)
        return
    if not answer:
        await _ask(update, context, text, AlertAction.RECONNECT_DATA, ref)
        return
    assert gw.ibc is not None
    await query.answer("Asking IBC to reconnect the data farms…")
    try:
        await IbcClient(gw.ibc.host or gw.host, gw.ibc.port).reconnect_data()
    except IbcError as e:
        await _refused(update, services, gateway, str(e), edit=True, command="RECONNECTDATA", question=text)
        return
    by, at = handle(update), utc_now()
    watcher.farms_reconnected(by)
    log.warning("%s had IBC reconnect the data farms of %s", by, gateway)
    await _audit(update, services, gateway, True, "OK", command="RECONNECTDATA")
    await query.edit_message_text(f"{text}\n🔄 IBC reconnects them. Asked by {by} at "
                                  f"{clock(at, services.core.config.watch.time_zone)}.")


def _refusal(services: ChatServices, gw: GatewayConfig, watcher: GatewayWatcher) -> str | None:
    """Why a restart must not be sent now, or None."""
    job = services.core.jobs.current(gw.name)
    if job is not None:
        return (f"{job.what} on {gw.name} is running (run #{job.run_id}, started by {job.request.started_by}); it "
                f"stops and starts the Gateway itself. /cancel {gw.name} first if it must go.")
    now = utc_now()
    expiry = restart_needs_login(now, watcher.engine.up_since)
    if expiry is not None:
        ny = expiry.astimezone(ZoneInfo(NEW_YORK))
        when = f"{ny:%a %H:%M} {ny.tzname()}"
        news = f"expires {when}" if expiry > now else f"expired {when} and {gw.name} has not logged in since"
        return (f"the weekly IBKR login token {news}: a restart now would need a 2FA login. "
                "Restart it by hand when someone can approve that login.")
    return None


async def _refused(update: Update, services: ChatServices, gateway: str, reason: str, *, edit: bool,
                   command: str = "RESTART", question: str | None = None) -> None:
    query = update.callback_query
    assert query is not None
    done = "Not restarted" if command == "RESTART" else "Not reconnected"
    text = f"❌ {done}: {reason}"
    log.warning("%s: IBC %s of %s refused: %s", handle(update), command, gateway, reason)
    await _audit(update, services, gateway, False, reason, command=command)
    await query.answer(f"{done}: the reason is in the chat.")
    if edit:
        await query.edit_message_text(f"{question or restart_question(gateway)}\n{text}")
    else:
        assert update.effective_chat is not None
        await update.get_bot().send_message(update.effective_chat.id, text)


async def _restart(update: Update, services: ChatServices, gw: GatewayConfig, watcher: GatewayWatcher,
                   inc: Incident) -> None:
    query = update.callback_query
    assert query is not None and gw.ibc is not None
    await query.answer("Asking IBC to restart it…")
    ibc = IbcClient(gw.ibc.host or gw.host, gw.ibc.port)
    try:
        accepted = await ibc.restart()
    except IbcError as e:
        await _refused(update, services, gw.name, str(e), edit=True)
        return
    by, at = handle(update), utc_now()
    watcher.restarted(by, inc.key)
    log.warning("%s had IBC at %s restart %s: %s", by, ibc.address, gw.name, " / ".join(accepted.replies))
    await _audit(update, services, gw.name, True, " / ".join(accepted.replies))
    await query.edit_message_text(f"{restart_question(gw.name)}\n🔄 {_accepted(accepted, at)} Asked by {by} at "
                                  f"{clock(at, services.core.config.watch.time_zone)}.")


def _accepted(accepted: RestartAccepted, at: datetime) -> str:
    if accepted.at is None:
        return "IBC restarts it now."
    return f"IBC restarts it at {accepted.at:%H:%M} (the Gateway host's clock)."


async def _audit(update: Update, services: ChatServices, gateway: str, done: bool, detail: str,
                 command: str = "RESTART") -> None:
    user = update.effective_user
    await services.core.repo.add_audit(update.effective_chat.id if update.effective_chat else None,
                                       user.id if user else None, handle(update), f"IBC {command} {gateway}", done,
                                       detail)
