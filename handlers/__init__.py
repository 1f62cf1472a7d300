"""The chat layer: thin handlers that parse, authorize, call bot, and render.

``install`` wires every handler onto a python-telegram-bot Application and registers the command
menu; bot/app.py, the composition root, calls it.
"""

from __future__ import annotations

from telegram import BotCommand, Update
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, MessageHandler, TypeHandler, filters

from bot.services import Services
from handlers import checks, commands, remedy, watch
from handlers.access import AccessGate
from handlers.context import HELP, KEY, ChatServices, Command
from handlers.errors import on_error

COMMANDS: dict[str, Command] = {
    "start": commands.start,
    "help": commands.help_,
    "status": commands.status,
    "connect": checks.connect,
    "soak": checks.soak,
    "disconnect": checks.disconnect,
    "reconnect": checks.reconnect,
    "drill": checks.drill,
    "errors": checks.errors,
    "checklist": checks.checklist,
    "cancel": commands.cancel,
    "history": commands.history,
    "report": commands.report_,
    "logs": commands.logs,
    "subscribe": watch.subscribe,
    "unsubscribe": watch.unsubscribe,
    "mute": watch.mute,
    "unmute": watch.unmute,
    "uptime": watch.uptime,
}


async def install(application: Application, services: Services) -> None:
    application.bot_data[KEY] = ChatServices(services)
    application.add_handler(TypeHandler(Update, AccessGate().check), group=-1)
    for name, callback in COMMANDS.items():
        application.add_handler(CommandHandler(name, callback))
    application.add_handler(CallbackQueryHandler(checks.on_button, pattern=checks.BUTTON_PATTERN))
    application.add_handler(CallbackQueryHandler(watch.on_alert_button, pattern=watch.BUTTON_PATTERN))
    application.add_handler(CallbackQueryHandler(remedy.on_remedy_button, pattern=remedy.BUTTON_PATTERN))
    application.add_handler(CallbackQueryHandler(commands.unknown_button))
    application.add_handler(MessageHandler(filters.COMMAND, commands.unknown))
    application.add_error_handler(on_error)
    # The command menu, so Telegram shows it when someone types '/'.
    await application.bot.set_my_commands([BotCommand(name, text) for name, _, text in HELP])
