"""A local Telegram Bot API stand-in and a terminal chat client for it (no token, no internet)."""

from bot.telegram_standin.formatting import Entity
from bot.telegram_standin.server import (
    ApiCall,
    BotApiStandIn,
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
from bot.telegram_standin.terminal import TerminalChat

__all__ = ["ApiCall", "BotApiStandIn", "BotMessage", "Button", "CallbackAnswer", "ChangeKind", "Chat", "ChatChange",
           "ChatType", "Command", "Entity", "MessageKind", "TerminalChat", "User"]
