"""A local Telegram Bot API stand-in and a terminal chat client for it (no token, no internet)."""

from bot.lab.telegram_standin.model import BotMessage, Button, ChangeKind, Command, MessageKind, User
from bot.lab.telegram_standin.server import BotApiStandIn

__all__ = ["BotApiStandIn", "BotMessage", "Button", "ChangeKind", "Command", "MessageKind", "User"]
