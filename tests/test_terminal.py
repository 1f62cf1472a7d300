"""The terminal front ends (`gwbot chat`, a check's prompts) never die on a bad line: one line, then they read on."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup

from bot.checks.base import OperatorAction, Reply
from bot.frontends.terminal import TerminalOperator
from bot.lab.telegram_standin import BotApiStandIn
from bot.lab.telegram_standin.terminal import TerminalChat

pytestmark = pytest.mark.timeout(20)

KAI = 42
LONG = b"x" * 70_000  # over a StreamReader's 64 KiB line limit


async def test_no_line_ends_the_terminal_chat(tmp_path: Path):
    async def local(line: str) -> str:
        if line.startswith("boom"):
            raise ValueError("invalid literal for int(): '²'")
        return f"OK {line}"

    taken = tmp_path / "taken"
    taken.write_text("a file where the files folder should be", encoding="utf-8")
    async with BotApiStandIn() as standin, Bot(standin.token, base_url=standin.base_url) as bot:
        standin.user(KAI, "Kai", "kai")
        reader, out = asyncio.StreamReader(), io.StringIO()
        terminal = TerminalChat(standin, KAI, KAI, files_dir=taken, local=local, linger=0.05, echo=False)
        run = asyncio.create_task(terminal.run(reader, out))
        await asyncio.sleep(0)  # subscribed before the bot speaks
        await bot.send_message(KAI, "pick", reply_markup=InlineKeyboardMarkup(
            [[InlineKeyboardButton("Yes", callback_data="yes")]]))
        await bot.send_document(KAI, b"# report", filename="report.md")  # cannot be saved: not a folder
        await bot.send_message(KAI, "still shown")
        reader.feed_data(b"!boom 1\n" + "²\n".encode() + LONG + b"\n!status\nhello\n")
        reader.feed_eof()
        await asyncio.wait_for(run, 5)
        texts = [u.message.text for u in await bot.get_updates(timeout=0) if u.message]
    transcript = out.getvalue()
    assert "local: ERROR invalid literal for int(): '²'\n" in transcript, transcript
    assert "could not save report.md" in transcript and "bot: still shown\n" in transcript, transcript
    assert "(a line too long to be typed: ignored)" in transcript and "local: OK status\n" in transcript, transcript
    assert texts == ["²", "hello"], "a digit that is not ASCII is text, not a button number"
    assert "x" * 100 not in transcript, "the long line was neither sent nor echoed"


async def test_a_check_prompt_reads_on_after_an_overlong_line(capsys):
    reader = asyncio.StreamReader()
    reader.feed_data(LONG + b"\nabort\n")
    reply = await asyncio.wait_for(TerminalOperator(reader).ask(OperatorAction.STOP_GATEWAY, "Stop it"), 2)
    assert reply.reply is Reply.ABORT
    assert "(a line too long to be typed: ignored)" in capsys.readouterr().out
