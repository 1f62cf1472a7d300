"""A local Telegram Bot API stand-in and a terminal chat client for it (no token, no internet)."""

from bot.telegram_standin.server import (
    ApiCall,
    BotApiStandIn,
    BotMessage,
    Button,
    CallbackAnswer,
    Chat,
    ChatChange,
    User,
)

__all__ = ["ApiCall", "BotApiStandIn", "BotMessage", "Button", "CallbackAnswer", "Chat", "ChatChange", "User"]
