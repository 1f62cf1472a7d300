"""What every handler needs, kept in PTB's bot_data under one key, and small shared helpers."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from telegram import Message, MessageEntity, Update
from telegram.ext import ContextTypes

from bot.config import NUMBER, ConfigError, GatewayConfig, Range
from bot.health import StatusProbes
from bot.services import Services
from handlers.operator import PromptBoard
from handlers.telegram_html import fit_message

KEY = "gwbot"
Command = Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]  # what PTB calls


@dataclass
class ChatServices:
    core: Services
    prompts: PromptBoard = field(default_factory=PromptBoard)
    probes: StatusProbes = field(default_factory=StatusProbes)


def chat_services(context: ContextTypes.DEFAULT_TYPE) -> ChatServices:
    return context.application.bot_data[KEY]


def who(update: Update) -> str:
    """How the run records a person: name, @username and id."""
    user = update.effective_user
    if user is None:
        return "unknown"
    handle = f" @{user.username}" if user.username else ""
    return f"{user.full_name}{handle} ({user.id})"


def handle(update: Update) -> str:
    """A person as the chat shows them: @username, else their name."""
    user = update.effective_user
    if user is None:
        return "someone"
    return f"@{user.username}" if user.username else user.full_name


async def reply(update: Update, text: str) -> None:
    assert update.effective_message is not None
    await update.effective_message.reply_text(fit_message(text))


UNKNOWN_BUTTON = "This button is not one gwbot knows."
QUOTE_LIMIT = 64  # characters of someone's input an answer quotes back


def quoted(text: str) -> str:
    """Someone's input as an answer or a log line shows it: a pasted blob must not make it long."""
    return text if len(text) <= QUOTE_LIMIT else text[:QUOTE_LIMIT - 1] + "…"


def command_of(message: Message | None) -> tuple[str, str | None] | None:
    """The command a message starts with, as Telegram marks it ('/status'), and the bot it is
    addressed to ('/status@somebot': 'somebot'); None when it is no command."""
    entities = message.entities if message is not None else ()
    if message is None or not entities or entities[0].type != MessageEntity.BOT_COMMAND or entities[0].offset:
        return None
    command, _, bot = message.parse_entity(entities[0]).partition("@")
    return command, bot or None


def for_another_bot(message: Message | None, ours: str) -> bool:
    """A command addressed to some other bot in a group: not ours to answer, not even to refuse."""
    command = command_of(message)
    return command is not None and command[1] is not None and command[1].lower() != ours.lower()


class BadArgument(ValueError):
    """A user typed something we cannot use; the message is the one-line answer."""


# Each command: its arguments (for its usage line) and what /help says; registered with
# setMyCommands, in this order. /start is left out of the menu.
HELP: tuple[tuple[str, str, str], ...] = (
    ("status", "[Gateway]", "health of the Gateway, the check running now, the last result"),
    ("connect", "[Gateway]", "test the API connection (Step 2)"),
    ("soak", "[minutes] [Gateway]", "stay connected N minutes with a heartbeat: /soak [minutes]"),
    ("disconnect", "[Gateway]", "test a graceful disconnect"),
    ("reconnect", "[Gateway]", "guided auto-reconnect test: stop and start the Gateway when asked"),
    ("drill", "[Gateway]", "auto-reconnect test through IBC's RESTART, no person needed (ibc configured)"),
    ("errors", "[Gateway]", "connection error handling matrix (Step 5)"),
    ("checklist", "[Gateway]", "the whole Task 5.1 checklist in one run"),
    ("cancel", "[Gateway]", "cancel the running check"),
    ("uptime", "[Gateway]", "availability over 24 h, 7 d, 30 d and a timeline: /uptime [Gateway]"),
    ("subscribe", "", "get the watch's alerts (down, back) in this chat"),
    ("unsubscribe", "", "stop the watch's alerts in this chat"),
    ("mute", "DURATION (30m, 1h, 2d) [Gateway]", "silence the watch's alerts: /mute 1h [Gateway]"),
    ("unmute", "[Gateway]", "alerts on again: /unmute [Gateway]"),
    ("history", "", "recent runs"),
    ("report", "[run number]", "a run's report: /report [run]"),
    ("logs", "[run number]", "a run's log as a file: /logs [run]"),
    ("help", "", "this list"),
)
USAGE = {"start": ""} | {name: args for name, args, _ in HELP}


def usage(services: ChatServices, command: str, example: str = "") -> BadArgument:
    """The one-line answer to arguments ``command`` does not take."""
    args = USAGE[command]
    line = f"Usage: /{command} {args}" if args else f"Usage: /{command} (no arguments)"
    if "[Gateway]" in args:
        line += f" (Gateways: {', '.join(services.core.config.gateway_names)})"
    return BadArgument(line + (f", e.g. {example}" if example else ""))


def no_args(services: ChatServices, command: str, args: list[str]) -> None:
    if args:
        raise usage(services, command)


def gateway_arg(services: ChatServices, command: str, args: list[str]) -> GatewayConfig:
    """The Gateway named in the arguments, or the default; anything else gets the usage line."""
    if len(args) > 1 or (args and NUMBER.fullmatch(args[0])):
        raise usage(services, command)
    try:
        return services.core.config.gateway(args[0] if args else None)
    except ConfigError as e:
        raise BadArgument(str(e).capitalize()) from None


def number_arg(text: str, allowed: Range, usage: str) -> int | float:
    """A number typed in chat, within the range declared beside its setting; else the usage line."""
    try:
        return allowed.parse(text)
    except ValueError:
        raise BadArgument(usage) from None
