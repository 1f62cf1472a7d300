"""A terminal chat client for the stand-in: type commands, see the bot's messages, pick buttons.

CLI code: it writes to the terminal directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TextIO

from bot.telegram_standin.server import BotApiStandIn, BotMessage, ChatChange


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} kB"


def render(change: ChatChange) -> str:
    """One transcript entry: text, files, and buttons as numbered choices."""
    m = change.message
    prefix = "bot (edited)" if change.kind == "edit" else "bot"
    if m.kind == "text":
        body = m.text
    else:
        body = f"[{m.kind} {m.file_name}, {_size(len(m.file_bytes or b''))}]" + (f" {m.text}" if m.text else "")
    lines = [f"{prefix}: {body}"]
    if m.buttons:
        lines.append("     " + "  ".join(f"[{i}] {b.text}" for i, b in enumerate(m.button_list, start=1)))
    return "\n".join(lines)


class TerminalChat:
    """The person at the terminal, chatting with the bot through the stand-in."""

    def __init__(self, standin: BotApiStandIn, chat_id: int, user_id: int, *,
                 files_dir: Path | None = None, show_edits: bool = True,
                 local: Callable[[str], Awaitable[str]] | None = None) -> None:
        self.standin = standin
        self.chat_id = chat_id
        self.user_id = user_id
        self.files_dir = files_dir
        self.show_edits = show_edits
        self.local = local  # lines starting with '!' go here instead of to the bot
        self._latest_buttons: BotMessage | None = None

    async def run(self, reader: asyncio.StreamReader, out: TextIO = sys.stdout) -> None:
        changes = self.standin.subscribe()
        printer = asyncio.create_task(self._print(changes, out))
        try:
            while line := await reader.readline():
                text = line.decode(errors="replace").strip()
                if text in ("/quit", "/exit"):
                    break
                if text.startswith("!") and self.local is not None:
                    print(f"local: {await self.local(text[1:])}", file=out, flush=True)
                elif text:
                    self._say(text, out)
        finally:
            await asyncio.sleep(0.2)  # let the last answers print
            printer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await printer
            self.standin.unsubscribe(changes)

    def _say(self, text: str, out: TextIO) -> None:
        if text.isdigit() and self._latest_buttons is not None:
            buttons = self._latest_buttons.button_list
            choice = int(text)
            if 1 <= choice <= len(buttons):
                print(f"you pressed: {buttons[choice - 1].text}", file=out, flush=True)
                self.standin.press(self.chat_id, self.user_id, self._latest_buttons.message_id,
                                   buttons[choice - 1].data)
                return
            print(f"(no button {choice}; pick 1-{len(buttons)})", file=out, flush=True)
            return
        self.standin.send_text(self.chat_id, self.user_id, text)

    async def _print(self, changes: asyncio.Queue[ChatChange], out: TextIO) -> None:
        while True:
            change = await changes.get()
            if change.message.chat_id != self.chat_id:
                continue
            if change.message.buttons:
                self._latest_buttons = change.message
            elif self._latest_buttons is not None and self._latest_buttons.message_id == change.message.message_id:
                self._latest_buttons = None  # its buttons were taken away
            if change.kind == "edit" and not self.show_edits and not change.message.buttons:
                continue
            print(render(change), file=out, flush=True)
            self._save(change.message, out)

    def _save(self, m: BotMessage, out: TextIO) -> None:
        if self.files_dir is None or m.file_bytes is None or not m.file_name:
            return
        self.files_dir.mkdir(parents=True, exist_ok=True)
        path = self.files_dir / m.file_name
        path.write_bytes(m.file_bytes)
        print(f"     saved to {path}", file=out, flush=True)
