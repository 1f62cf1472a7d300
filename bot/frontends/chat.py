"""`gwbot chat`: the whole bot against the Bot API stand-in and a simulated Gateway, in this terminal."""

from __future__ import annotations

import argparse
import asyncio
import getpass
from dataclasses import replace

from bot.config import Config
from bot.frontends.common import EXIT_OK, stop_on_signals
from bot.frontends.terminal import stdin_reader
from bot.lab.chat import lab_chat
from bot.lab.simctl import CONTROL_HELP, control, for_people, send_control
from bot.lab.telegram_standin import User
from bot.lab.telegram_standin.terminal import TerminalChat

CHAT_USER_ID = 1001


CHAT_DOWN_AFTER = 0.5  # seconds: gwbot chat's watch reports a !stop at once ...
CHAT_WATCH = {"knock_interval": 0.1, "max_pause": 1.0}  # ... and a !start within about a second


async def chat(config: Config, args: argparse.Namespace) -> int:
    """The whole bot, against the Bot API stand-in and a simulated Gateway, typed at in this terminal."""
    stop = stop_on_signals()
    config = replace(config, soak=replace(config.soak, duration=args.soak, heartbeat_interval=1.0),
                     telegram=replace(config.telegram, progress_interval=2.0),
                     # The watch reports a !stop within a second here: down_after short, the terminal is the alert chat.
                     watch=replace(config.watch, down_after=CHAT_DOWN_AFTER, alert_chat_ids=frozenset({CHAT_USER_ID})))
    async with lab_chat(config, [User(CHAT_USER_ID, "You", getpass.getuser())], watch_options=CHAT_WATCH,
                        attach_port=args.attach) as lab:
        gw = lab.config.gateway()
        where = "simulated" if lab.gateway else "attached to the"
        print(f"gwbot chat: {where} Gateway on {gw.host}:{gw.port}, Bot API stand-in on {lab.standin.base_url}.\n"
              "Type /help, /checklist or /reconnect; a number picks a button. Control the simulated Gateway with\n"
              f"!stop, !start, !freeze, !unfreeze, !status ... ({CONTROL_HELP.lower()}). /quit ends.\n",
              flush=True)

        async def local(line: str) -> str:
            if lab.gateway is not None:
                return for_people(await control(lab.gateway, line))
            return for_people(await send_control("127.0.0.1", args.control_port, line))

        terminal = TerminalChat(lab.standin, CHAT_USER_ID, CHAT_USER_ID, files_dir=config.data_dir / "chat-files",
                                local=local)
        typing = asyncio.create_task(terminal.run(stdin_reader()))
        stopped = asyncio.create_task(stop.wait())
        try:
            # Ctrl-C stops the bot; the chat must end with it, not wait for the next line.
            await asyncio.wait({typing, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (typing, stopped):
                task.cancel()
            await asyncio.gather(typing, stopped, return_exceptions=True)
    return EXIT_OK
