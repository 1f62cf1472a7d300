"""Terminal front end: prompts a person for the manual steps and shows live progress.

This is CLI code, so it writes to the terminal directly.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from bot.checks.base import OperatorAction, OperatorReply, Progress, Reply


async def stdin_lines() -> asyncio.StreamReader:
    """A non-blocking reader of standard input (pipe or TTY); EOF at once when there is none."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (ValueError, OSError, AttributeError):
        # A regular file or no stdin: read it in a thread, once, then hand out its lines.
        data = await asyncio.to_thread(lambda: sys.stdin.read() if sys.stdin else "")
        reader.feed_data(data.encode())
        reader.feed_eof()
    return reader


class TerminalOperator:
    """Asks the person at the terminal; also proceeds by itself when the check sees the event."""

    def __init__(self, reader: asyncio.StreamReader, out: TextIO = sys.stdout) -> None:
        self.reader = reader
        self.out = out

    async def tell(self, text: str) -> None:
        print(f"\n>>> {text}", file=self.out, flush=True)

    async def ask(self, action: OperatorAction, text: str) -> OperatorReply:
        print(f"\n>>> {text}\n    Press Enter when done, or type 'abort' and Enter. "
              "(I also move on by myself when I see it happen.)", file=self.out, flush=True)
        line = await self.reader.readline()
        if not line:
            await asyncio.Event().wait()  # no input at all: wait for the event itself
        reply = Reply.ABORT if line.strip().lower() in (b"a", b"abort") else Reply.DONE
        return OperatorReply(reply, by="terminal")


class ProgressPrinter:
    """A live progress line on a TTY; plain lines (never buffered) elsewhere."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.live = out.isatty()

    def __call__(self, p: Progress) -> None:
        bar = ""
        if p.fraction is not None:
            filled = round(p.fraction * 20)
            bar = f"[{'#' * filled}{'.' * (20 - filled)}] {p.fraction:4.0%} "
        line = f"  {p.check:<10} {bar}{p.message}"
        if self.live:
            print(f"\r\033[K{line}", end="", file=self.out, flush=True)
        else:
            print(line, file=self.out, flush=True)

    def done(self) -> None:
        if self.live:
            print(file=self.out, flush=True)
