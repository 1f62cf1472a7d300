"""Terminal front end: prompts a person for the manual steps and shows live progress.

This is CLI code, so it writes to the terminal directly.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from typing import BinaryIO

from bot.checks.base import OperatorAction, OperatorReply, Progress, Reply


def stdin_reader(stream: BinaryIO | None = None) -> asyncio.StreamReader:
    """Standard input as a StreamReader, fed by a daemon thread.

    A thread works for a TTY, a pipe and a redirected file alike (connect_read_pipe refuses regular
    files and puts a shared TTY into non-blocking mode); as a daemon it never holds up exit while
    blocked in read. It reads the raw descriptor: a daemon thread blocked inside sys.stdin.buffer
    holds that buffer's lock and makes interpreter shutdown abort ("could not acquire lock").
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        fd = None if stream is not None else sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # no standard input at all
        reader.feed_eof()
        return reader

    def read_chunk() -> bytes:
        return os.read(fd, 4096) if fd is not None else stream.readline()  # type: ignore[union-attr]

    def pump() -> None:
        try:
            while chunk := read_chunk():
                loop.call_soon_threadsafe(reader.feed_data, chunk)
            loop.call_soon_threadsafe(reader.feed_eof)
        except (RuntimeError, OSError, ValueError):
            pass  # the loop is closed or stdin went away: nobody is reading any more

    threading.Thread(target=pump, name="stdin-reader", daemon=True).start()
    return reader


async def read_line(reader: asyncio.StreamReader) -> bytes | None:
    """The next line (b"" at EOF); None for a line over the reader's limit, skipped to its end:
    too long to be anything typed, and no reason for a front end to stop reading."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as e:  # EOF: the last line may lack its newline
        return e.partial
    except asyncio.LimitOverrunError as e:
        skip = e.consumed
    while True:
        try:
            await reader.readexactly(skip)  # the buffer holds this much of the long line, maybe its newline next
            await reader.readuntil(b"\n")
            return None
        except asyncio.IncompleteReadError:
            return None
        except asyncio.LimitOverrunError as e:
            skip = e.consumed


TOO_LONG = "(a line too long to be typed: ignored)"


class TerminalOperator:
    """Asks the person at the terminal; also proceeds by itself when the check sees the event."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader

    async def tell(self, text: str) -> None:
        print(f"\n>>> {text}", flush=True)

    async def ask(self, action: OperatorAction, text: str) -> OperatorReply:
        print(f"\n>>> {text}\n    Press Enter when done, or type 'abort' and Enter. "
              "(I also move on by myself when I see it happen.)", flush=True)
        while (line := await read_line(self.reader)) is None:
            print(f"    {TOO_LONG} Press Enter when done, or type 'abort' and Enter.", flush=True)
        if not line:
            await asyncio.Event().wait()  # no input at all: wait for the event itself
        reply = Reply.ABORT if line.strip().lower() in (b"a", b"abort") else Reply.DONE
        return OperatorReply(reply, by="terminal")


class ProgressPrinter:
    """A live progress line on a TTY; plain lines (never buffered) elsewhere."""

    def __init__(self) -> None:
        self.live = sys.stdout.isatty()

    def __call__(self, p: Progress) -> None:
        bar = ""
        if p.fraction is not None:
            filled = round(p.fraction * 20)
            bar = f"[{'#' * filled}{'.' * (20 - filled)}] {p.fraction:4.0%} "
        line = f"  {p.check:<10} {bar}{p.message}"
        if self.live:
            print(f"\r\033[K{line}", end="", flush=True)
        else:
            print(line, flush=True)

    def done(self) -> None:
        if self.live:
            print(flush=True)
