"""The watch's alerts into the durable outbox: one row per chat (configured + /subscribe), written
in one transaction, so an alert reaches every chat or, on a crash, none is half-sent twice."""

from __future__ import annotations

import logging

from bot.config import Config
from bot.outbox import Outbox
from bot.watch.alerts import Alert, AlertAction
from bot.watch.state import gateway_ref
from bot.watch.watcher import Watch
from storage import OutKind, OutMessage, Repository

log = logging.getLogger(__name__)
BUTTON_LABELS = {AlertAction.ACKNOWLEDGE: "Acknowledge", AlertAction.MUTE_1H: "Mute 1h",
                 AlertAction.RESTART: "Restart Gateway", AlertAction.RECONNECT_DATA: "Reconnect data"}


def alert_message(alert: Alert, ibc: bool = False) -> OutMessage:
    """The alert as the outbox stores it: quiet unless loud, its buttons, an edit when it replaces one.
    ``ibc``: the Gateway has IBC's command server configured, so the alert may offer its remedy."""
    # The incident's short reference, not its key: callback data is 64 bytes at most, whatever the name.
    ref = alert.incident.ref if alert.incident is not None else gateway_ref(alert.gateway)
    actions = list(alert.actions)
    if ibc and alert.remedy is not None:
        actions.insert(1 if actions else 0, alert.remedy)  # beside [Acknowledge]
    buttons = tuple((BUTTON_LABELS[a], f"{a}:{ref}") for a in actions)
    return OutMessage(OutKind.TEXT, alert.text, silent=not alert.loud, buttons=buttons, key=alert.message_key,
                      edit=alert.edit)


def watching(config: Config, repo: Repository, outbox: Outbox, **watch_options: object) -> Watch:
    """The always-on watch for ``gwbot run`` / ``gwbot chat``, to use with ``async with``: after
    storage and the outbox exist, stopped before the repository closes."""
    async def sink(alert: Alert) -> None:
        """Fans out to the alert chats and the subscribers."""
        chats = sorted(config.watch.alert_chat_ids | set(await repo.subscribers.chat_ids()))
        if not chats:
            log.info("watch alert with no chat to send it to (watch.alert_chat_ids, /subscribe): %s",
                     alert.text.splitlines()[0])
            return
        message = alert_message(alert, ibc=config.gateway(alert.gateway).ibc is not None)
        await outbox.enqueue_many([(chat_id, message) for chat_id in chats])

    return Watch(config, sink, store=repo.incidents, **watch_options)  # type: ignore[arg-type]
