"""The watch's commands: /subscribe, /unsubscribe, /mute, /unmute, /uptime and the
[Acknowledge] / [Mute 1h] buttons under an alert. One small async function each."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import timedelta

from telegram import Update
from telegram.ext import ContextTypes

from bot.config import GATEWAY_NAME
from bot.watch.alerts import AlertAction
from bot.watch.uptime import timeline_png, uptime_report
from bot.watch.watcher import Watch, utc_now
from handlers.context import (
    UNKNOWN_BUTTON,
    BadArgument,
    ChatServices,
    chat_services,
    gateway_arg,
    handle,
    no_args,
    reply,
    usage,
    who,
)
from storage import OutMessage

log = logging.getLogger(__name__)
# An incident's ref (11 characters), or an older alert's incident key ('paper@1764...').
REF = rf"([A-Za-z0-9_-]{{11}}|{GATEWAY_NAME.pattern}@[0-9]{{1,20}})"
# Callback data "ack:<ref>" / "mute1h:<ref>"; the remedies (handlers/remedy.py) have their own.
BUTTON_PATTERN = rf"^({AlertAction.ACKNOWLEDGE}|{AlertAction.MUTE_1H}):{REF}$"
_DURATION = re.compile(r"(\d{1,4})(m|min|h|d)")
_UNITS = {"m": 60, "min": 60, "h": 3600, "d": 86400}
MUTE_MAX = timedelta(days=7)  # longer than a week is forgetting, not muting


def _watch(services: ChatServices) -> Watch:
    if services.core.watch is None:
        raise BadArgument("The watch is not running here (gwbot run and gwbot chat start it).")
    return services.core.watch


async def subscribe(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    services = chat_services(context)
    no_args(services, "subscribe", context.args or [])
    _watch(services)
    assert update.effective_chat is not None
    added = await services.core.repo.subscribers.add(update.effective_chat.id, who(update))
    await reply(update, f"This chat {'now' if added else 'already'} gets the watch's alerts. /unsubscribe stops them.")


async def unsubscribe(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    services = chat_services(context)
    no_args(services, "unsubscribe", context.args or [])
    assert update.effective_chat is not None
    removed = await services.core.repo.subscribers.remove(update.effective_chat.id)
    configured = update.effective_chat.id in services.core.config.watch.alert_chat_ids
    text = "This chat no longer gets the watch's alerts." if removed else "This chat was not subscribed."
    if configured:
        text += " It is in watch.alert_chat_ids, so alerts still come here until the config changes."
    await reply(update, text)


def _mute_args(services: ChatServices, args: list[str]) -> tuple[timedelta, str | None]:
    """How long, and which Gateway (None: every one)."""
    wrong = usage(services, "mute", "/mute 1h")
    if not args or len(args) > 2:
        raise wrong
    m = _DURATION.fullmatch(args[0].lower())
    if m is None or int(m.group(1)) == 0:
        raise wrong
    span = timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
    if span > MUTE_MAX:
        raise BadArgument("At most a week: /mute 7d. For longer, take the chat out with /unsubscribe.")
    return span, (gateway_arg(services, "mute", args[1:]).name if len(args) == 2 else None)


async def mute(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    services = chat_services(context)
    span, gateway = _mute_args(services, context.args or [])
    until = utc_now() + span
    _watch(services).mute(gateway, until)
    log.info("%s muted the watch's alerts for %s until %s", who(update), gateway or "every Gateway", until)
    await reply(update, f"🔕 Alerts for {gateway or 'every Gateway'} muted until {until:%H:%M} UTC "
                        f"(by {handle(update)}). /unmute ends it.")


async def unmute(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    services = chat_services(context)
    args = context.args or []
    gateway = gateway_arg(services, "unmute", args).name if args else None
    _watch(services).mute(gateway, None)
    await reply(update, f"🔔 Alerts for {gateway or 'every Gateway'} are on again.")


async def uptime(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    services = chat_services(context)
    gw = gateway_arg(services, "uptime", context.args or [])
    settings = services.core.config.watch
    assert update.effective_chat is not None
    report = await uptime_report(services.core.repo.incidents, gw.name, settings.schedule, utc_now(),
                                 tz=settings.time_zone)
    # matplotlib is CPU work: off the loop, so alerts and other commands go on meanwhile.
    png = await asyncio.to_thread(timeline_png, report)
    await services.core.outbox.enqueue(update.effective_chat.id, [
        OutMessage.plain(report.text), OutMessage.photo(png, f"{gw.name}: uptime timeline", f"uptime-{gw.name}.png")])


async def on_alert_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """[Acknowledge] takes the outage (the alert is edited to say who, by the watch); [Mute 1h] mutes its Gateway."""
    query = update.callback_query
    assert query is not None and query.data is not None
    action, _, ref = query.data.partition(":")
    watch = chat_services(context).core.watch
    if watch is None:  # no alert, so no alert button, comes from a gwbot without its watch
        await query.answer(UNKNOWN_BUTTON)
        return
    found = await watch.find(ref)
    if found is None:
        await query.answer("This alert's Gateway is not watched here any more.")
        return
    gateway, key = found
    if action == AlertAction.MUTE_1H:
        watch.mute(gateway, utc_now() + timedelta(hours=1))
        await query.answer(f"Alerts for {gateway} muted for 1 h. /unmute ends it.")
        return
    if watch.acknowledge(key, by=handle(update)):
        log.info("%s acknowledged %s", who(update), key)
        await query.answer("Taken. Reminders stop; the recovery will still be posted.")
        return
    inc = watch.watcher(gateway).state.incident
    if inc is not None and inc.key == key and inc.acked_by:
        await query.answer(f"Already taken by {inc.acked_by}.")
    else:
        await query.answer("This outage is over.")
