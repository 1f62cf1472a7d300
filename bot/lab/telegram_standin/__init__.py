"""A local Telegram Bot API stand-in and a terminal chat client for it (no token, no internet)."""

from bot.lab.telegram_standin.model import (
    ApiCall,
    BotMessage,
    Button,
    CallbackAnswer,
    ChangeKind,
    Chat,
    ChatChange,
    ChatType,
    Command,
    MessageKind,
    User,
)
from bot.lab.telegram_standin.server import BotApiStandIn
from bot.lab.telegram_standin.terminal import TerminalChat
from handlers.telegram_html import Entity

__all__ = ["ApiCall", "BotApiStandIn", "BotMessage", "Button", "CallbackAnswer", "ChangeKind", "Chat", "ChatChange",
           "ChatType", "Command", "Entity", "MessageKind", "TerminalChat", "User"]
