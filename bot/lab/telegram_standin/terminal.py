"""A terminal chat client for the stand-in: type commands, see the bot's messages, pick buttons.

CLI front end: it writes to the terminal directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import mimetypes
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TextIO

from bot.frontends.terminal import TOO_LONG, read_line
from bot.lab.telegram_standin.model import BotMessage, ChangeKind, ChatChange, MessageKind
from bot.lab.telegram_standin.server import BotApiStandIn

log = logging.getLogger(__name__)
INDENT = "     "  # continuation lines line up under the text after "bot: "
MAX_LINGER = 10.0  # seconds: a bot that keeps talking does not hold the chat open for ever


def human_size(n: int) -> str:
    """1234 -> "1.2 kB" (SI units, as Telegram clients show)."""
    if n < 1000:
        return f"{n} B"
    if n < 1_000_000:
        return f"{n / 1000:.1f} kB"
    return f"{n / 1_000_000:.1f} MB"


def render(change: ChatChange) -> str:
    """One transcript entry: the text, a file as "[document r.md, 1.2 kB]", buttons as numbered choices."""
    m = change.message
    if change.kind is ChangeKind.ANSWER:
        answer = change.answer
        return f"bot ({'alert' if answer and answer.show_alert else 'toast'}): {answer.text if answer else ''}"
    prefix = "bot (edited): " if change.kind is ChangeKind.EDIT else "bot: "
    if m.kind is MessageKind.TEXT:
        body = m.text
    else:
        body = f"[{m.kind} {m.file_name or m.kind}, {human_size(len(m.file_bytes or b''))}]"
        body += f" {m.text}" if m.text else ""
    lines = [prefix + body.replace("\n", "\n" + INDENT)]
    if m.buttons:
        lines.append(INDENT + "  ".join(f"[{i}] {b.text}" for i, b in enumerate(m.button_list, start=1)))
    return "\n".join(lines)


class TerminalChat:
    """The person at the terminal, chatting with the bot through the stand-in.

    Prints every new bot message and every edit in ``chat_id``; a line that is a number presses that
    button of the latest message with buttons, ``!...`` goes to ``local`` if given, anything else is
    sent as the person's text. EOF or ``/quit`` ends, after the bot has gone quiet for ``linger`` s.
    """

    def __init__(self, standin: BotApiStandIn, chat_id: int, user_id: int, *,
                 files_dir: Path | None = None, local: Callable[[str], Awaitable[str]] | None = None,
                 echo: bool | None = None, linger: float = 0.5) -> None:
        self.standin = standin
        self.chat_id = chat_id
        self.user_id = user_id
        self.files_dir = files_dir
        self.local = local  # lines starting with '!' go here instead of to the bot
        self.echo = echo  # print the person's lines (None: when input is not a TTY, so a transcript reads well)
        self.linger = linger
        self._shown: dict[int, BotMessage] = {}  # the bot's messages as last printed, by message id
        self._printed = asyncio.Event()

    async def run(self, reader: asyncio.StreamReader, out: TextIO = sys.stdout) -> None:
        """Chat until EOF or /quit."""
        echo = self.echo if self.echo is not None else not _stdin_is_tty()
        changes = self.standin.subscribe()
        printer = asyncio.create_task(self._print(changes, out))
        try:
            while (line := await read_line(reader)) != b"":
                if line is None:
                    _say(out, TOO_LONG)
                    continue
                text = line.decode(errors="replace").strip()
                if text in ("/quit", "/exit"):
                    break
                if echo and text:
                    _say(out, f"you: {text}")
                try:
                    await self._typed(text, changes, out)
                except Exception as e:  # a typo must not end the chat: say so and read on
                    log.exception("terminal chat: %r failed", text[:80])
                    _say(out, f"(that did not work: {type(e).__name__}: {str(e)[:200]})")
            await self._until_quiet()
        finally:
            printer.cancel()
            await asyncio.gather(printer, return_exceptions=True)  # our own cancellation still reaches us
            self.standin.unsubscribe(changes)
            self._drain(changes, out)

    async def _typed(self, text: str, changes: asyncio.Queue[ChatChange], out: TextIO) -> None:
        if text.startswith("!") and self.local is not None:
            try:
                answer = await self.local(text[1:])
            except Exception as e:  # the local side's own words for what went wrong, as its answers read
                log.exception("terminal chat: !%s failed", text[1:80])
                answer = f"ERROR {str(e)[:200] or type(e).__name__}"
            _say(out, f"local: {answer}")
        elif text:
            self._drain(changes, out)  # a number picks from what the person has seen, so show it all
            self._send(text, out)

    def _send(self, text: str, out: TextIO) -> None:
        # A number (plain ASCII digits: '²' is text) picks from the newest message shown that still has buttons.
        number = text.isascii() and text.isdigit()
        with_buttons = [m for m in self._shown.values() if m.buttons] if number else []
        target = max(with_buttons, key=lambda m: m.message_id, default=None)
        if target is None:
            self.standin.send_text(self.chat_id, self.user_id, text)
            return
        buttons = target.button_list
        choice = int(text)
        if not 1 <= choice <= len(buttons):
            _say(out, f"(no button {choice}; pick 1-{len(buttons)})")
            return
        _say(out, f"you pressed: {buttons[choice - 1].text}")
        self.standin.press(self.chat_id, self.user_id, target.message_id, buttons[choice - 1].data)

    async def _until_quiet(self) -> None:
        # Input is over (a pipe, usually): let the bot's answers to the last lines print first.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(MAX_LINGER):
                while True:
                    self._printed.clear()
                    try:
                        async with asyncio.timeout(self.linger):
                            await self._printed.wait()
                    except TimeoutError:
                        return

    def _drain(self, changes: asyncio.Queue[ChatChange], out: TextIO) -> None:
        while not changes.empty():
            self._show(changes.get_nowait(), out)

    async def _print(self, changes: asyncio.Queue[ChatChange], out: TextIO) -> None:
        while True:
            self._show(await changes.get(), out)

    def _show(self, change: ChatChange, out: TextIO) -> None:
        m = change.message
        if m.chat_id != self.chat_id:
            return
        if change.kind is not ChangeKind.ANSWER:
            self._shown[m.message_id] = m
        if change.kind is ChangeKind.ANSWER and not (change.answer and change.answer.text):
            return  # a silent answer only stops the client's spinner
        _say(out, render(change))
        self._printed.set()
        if change.kind is ChangeKind.NEW:
            self._save(m, out)

    def _save(self, m: BotMessage, out: TextIO) -> None:
        if self.files_dir is None or m.file_bytes is None:
            return
        try:
            self.files_dir.mkdir(parents=True, exist_ok=True)
            path = _unused(self.files_dir / file_name(m))
            path.write_bytes(m.file_bytes)  # small files, once per message: not worth a thread
        except OSError as e:  # the chat goes on showing messages; only this file is not kept
            _say(out, f"{INDENT}could not save {file_name(m)} in {self.files_dir}: {e.strerror or e}")
            return
        _say(out, f"{INDENT}saved to {path}")


_MAGIC = ((b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"%PDF-", ".pdf"))


def file_name(m: BotMessage) -> str:
    """The name the bot sent, or "photo-12.png" when it sent none (PTB then names the part after its
    MIME type, e.g. "application.octet-stream"). Never a path: the bot does not choose folders."""
    sent = Path(m.file_name or "").name
    if sent and sent != (m.mime_type or "").replace("/", "."):
        return sent
    ext = next((e for magic, e in _MAGIC if (m.file_bytes or b"").startswith(magic)), None)
    ext = ext or mimetypes.guess_extension(m.mime_type or "") or ""
    return f"{m.kind}-{m.message_id}{'' if ext == '.bin' else ext}"


def _unused(path: Path) -> Path:
    """``path``, or report-2.md, report-3.md ... so a second file of the same name keeps the first."""
    numbered = (path.with_name(f"{path.stem}-{n}{path.suffix}") for n in itertools.count(2))
    return next(p for p in itertools.chain([path], numbered) if not p.exists())


def _stdin_is_tty() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):  # closed, or replaced by a test runner
        return False


def _say(out: TextIO, text: str) -> None:
    print(text, file=out, flush=True)
