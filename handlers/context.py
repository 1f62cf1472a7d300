"""What every handler needs, kept in PTB's bot_data under one key, and small shared helpers."""

from __future__ import annotations

from dataclasses import dataclass, field

from telegram import Update
from telegram.ext import ContextTypes

from bot.app import Services
from bot.config import NUMBER, ConfigError, GatewayConfig, Range
from handlers.operator import PromptBoard

KEY = "gwbot"


@dataclass
class ChatServices:
    core: Services
    prompts: PromptBoard = field(default_factory=PromptBoard)


def chat_services(context: ContextTypes.DEFAULT_TYPE) -> ChatServices:
    return context.application.bot_data[KEY]


def who(update: Update) -> str:
    """How the run records a person: name, @username and id."""
    user = update.effective_user
    if user is None:
        return "unknown"
    handle = f" @{user.username}" if user.username else ""
    return f"{user.full_name}{handle} ({user.id})"


def origin(update: Update) -> str:
    chat = update.effective_chat
    return f"telegram chat {chat.id}" if chat else "telegram"


class BadArgument(ValueError):
    """A user typed something we cannot use; the message is the one-line answer."""


def gateway_arg(services: ChatServices, args: list[str]) -> GatewayConfig:
    """The Gateway named in the arguments, or the default; unknown names are a clear error."""
    names = [a for a in args if not NUMBER.fullmatch(a)]
    if len(names) > 1:
        raise BadArgument(f"Give at most one Gateway name; configured: {', '.join(services.core.config.gateway_names)}")
    try:
        return services.core.config.gateway(names[0] if names else None)
    except ConfigError as e:
        raise BadArgument(str(e).capitalize()) from None


def number_arg(text: str, allowed: Range, usage: str) -> int | float:
    """A number typed in chat, within the range declared beside its setting; else the usage line."""
    try:
        return allowed.parse(text)
    except ValueError:
        raise BadArgument(usage) from None
