"""The safety net: bad input gets its one-line answer, anything else is logged and the bot goes on."""

from __future__ import annotations

import logging

from telegram import Update
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from handlers.context import BadArgument
from handlers.telegram_html import fit_message

log = logging.getLogger(__name__)


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    error = context.error
    message = update.effective_message if isinstance(update, Update) else None
    if isinstance(error, BadArgument):
        text = str(error)
    else:
        log.error("handler failed on %s", update, exc_info=error)
        text = f"Sorry, that failed ({type(error).__name__}). It is logged; I keep running."
    if message is not None:
        try:
            await message.reply_text(fit_message(text))
        except TelegramError:
            log.warning("could not tell the chat about the error", exc_info=True)
