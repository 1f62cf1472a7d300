"""The gate: only allow-listed chats and people may use commands or buttons.

Runs before every other handler (group -1) and stops the update there when it is refused.
A refused person hears it once per REFUSAL_QUIET seconds, so a spammer gets no echo.
"""

from __future__ import annotations

import logging
import time

from telegram import Update
from telegram.ext import ApplicationHandlerStop, ContextTypes

from handlers.context import chat_services, for_another_bot, handle, quoted

log = logging.getLogger(__name__)
REFUSAL_QUIET = 600.0


class AccessGate:
    def __init__(self) -> None:
        self._refused: dict[tuple[int | None, int | None], float] = {}

    async def check(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.effective_user is None:
            raise ApplicationHandlerStop  # channel posts and the like: nobody to authorize
        if update.callback_query is None and for_another_bot(update.effective_message, context.bot.username):
            raise ApplicationHandlerStop  # '/status@otherbot' in a group: as if we had not seen it
        services = chat_services(context)
        users = services.core.config.telegram.allowed_user_ids
        chat, user_id = update.effective_chat, update.effective_user.id
        chat_id = chat.id if chat else None
        action, username = _action(update), handle(update)
        # A listed group that became a supergroup is still the squad's chat (the outbox followed it).
        chats = services.core.outbox.followed(services.core.config.telegram.allowed_chat_ids)
        # A listed person in a listed chat (or in their own private chat); with no people listed,
        # anyone in a listed chat.
        private = chat is not None and chat.type == "private"
        if (not users or user_id in users) and (chat_id in chats or (private and user_id in users)):
            if action != "message":
                await services.core.repo.add_audit(chat_id, user_id, username, action, True)
            return
        log.warning("refused %s from %s (user %s) in chat %s", action, username, user_id, chat_id)
        await services.core.repo.add_audit(chat_id, user_id, username, action, False, "not on the allow-list")
        await self._refuse(update, chat_id, user_id)
        raise ApplicationHandlerStop

    def first_refusal(self, chat_id: int | None, user_id: int | None, now: float) -> bool:
        """Whether to tell this person they are refused: once per quiet time. Refusals past it are
        forgotten, so strangers passing by do not grow the memory."""
        self._refused = {key: at for key, at in self._refused.items() if now - at < REFUSAL_QUIET}
        if (chat_id, user_id) in self._refused:
            return False
        self._refused[(chat_id, user_id)] = now
        return True

    async def _refuse(self, update: Update, chat_id: int | None, user_id: int | None) -> None:
        if update.callback_query is not None:
            await update.callback_query.answer("You may not act on this bot.")
            return
        if not self.first_refusal(chat_id, user_id, time.monotonic()):
            return
        assert update.effective_message is not None
        await update.effective_message.reply_text(
            f"Sorry, this bot only answers its squad. Chat id {chat_id}, user id {user_id}: an admin can add "
            "them to telegram.allowed_chat_ids / allowed_user_ids in config.yaml.")


def _action(update: Update) -> str:
    if update.callback_query is not None:
        return f"button {update.callback_query.data}"
    message = update.effective_message  # edited messages too: PTB's CommandHandler runs on edits
    text = message.text if message is not None and message.text else ""
    return quoted(text.split()[0]) if text.startswith("/") else "message"
