"""The Bot API stand-in answers the real PTB Bot like Telegram does, errors included."""

from __future__ import annotations

import asyncio
import io
import time

import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest, InvalidToken, RetryAfter

from bot.telegram_standin import BotApiStandIn
from bot.telegram_standin.terminal import TerminalChat

KAI = 42


@pytest.fixture
async def standin():
    async with BotApiStandIn() as s:
        s.user(KAI, "Kai", "kai")
        yield s


@pytest.fixture
async def bot(standin):
    async with Bot(standin.token, base_url=standin.base_url) as b:
        yield b


async def test_get_me_and_wrong_token(standin, bot):
    assert (await bot.get_me()).username == "gwbot_test_bot"
    with pytest.raises(InvalidToken):
        async with Bot("999:wrong", base_url=standin.base_url):
            pass


async def test_messages_buttons_and_edits(standin, bot):
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("Done", callback_data="op:1:done")]])
    sent = await bot.send_message(KAI, "Stop the Gateway now", reply_markup=markup, disable_notification=True)
    stored = standin.messages(KAI)[0]
    assert stored.text == "Stop the Gateway now" and stored.button_list[0].data == "op:1:done"
    assert stored.disable_notification
    with pytest.raises(BadRequest, match="Message is not modified"):
        await bot.edit_message_text("Stop the Gateway now", KAI, sent.message_id, reply_markup=markup)
    edited = await bot.edit_message_text("Stopped.", KAI, sent.message_id)
    assert edited.text == "Stopped." and standin.messages(KAI)[0].edits == 1 and not standin.messages(KAI)[0].buttons
    with pytest.raises(BadRequest, match="Message to edit not found"):
        await bot.edit_message_text("x", KAI, 999)
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_message(12345, "hello?")
    with pytest.raises(BadRequest, match="Message text is empty"):
        await bot.send_message(KAI, " ")


async def test_files_round_trip(standin, bot):
    doc = await bot.send_document(KAI, io.BytesIO(b"# report"), filename="r.md", caption="Report")
    photo = await bot.send_photo(KAI, b"\x89PNG fake", caption="chart")
    assert doc.document.file_name == "r.md" and photo.photo[-1].file_size == 9
    kinds = [(m.kind, m.file_bytes) for m in standin.messages(KAI)]
    assert kinds == [("document", b"# report"), ("photo", b"\x89PNG fake")]


async def test_flood_control_and_commands(standin, bot):
    standin.flood("sendMessage", retry_after=2)
    with pytest.raises(RetryAfter):
        await bot.send_message(KAI, "too fast")
    await bot.send_message(KAI, "fine now")
    await bot.set_my_commands([("status", "health")])
    assert standin.commands == [("status", "health")]
    assert [c.command for c in await bot.get_my_commands()] == ["status"]


async def test_long_poll_returns_as_soon_as_an_update_arrives(standin, bot):
    async def later():
        await asyncio.sleep(0.3)
        standin.send_text(KAI, KAI, "/ping now")

    task = asyncio.create_task(later())
    start = time.monotonic()
    updates = await bot.get_updates(timeout=5)
    await task
    assert 0.25 < time.monotonic() - start < 0.8
    message = updates[0].message
    assert message.text == "/ping now" and message.entities[0].type == "bot_command"
    assert await bot.get_updates(offset=updates[0].update_id + 1, timeout=0) == ()


async def test_terminal_chat_over_a_pipe(standin, bot):
    reader = asyncio.StreamReader()
    out = io.StringIO()
    chat = TerminalChat(standin, KAI, KAI, local=lambda line: _echo(line))
    run = asyncio.create_task(chat.run(reader, out))
    await asyncio.sleep(0.05)
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("Done", callback_data="d"),
                                    InlineKeyboardButton("Abort", callback_data="a")]])
    await bot.send_message(KAI, "Start the Gateway again now", reply_markup=markup)
    await asyncio.sleep(0.05)
    reader.feed_data(b"/status\n2\n!stop\n")
    reader.feed_eof()
    await asyncio.wait_for(run, 5)
    text = out.getvalue()
    assert "bot: Start the Gateway again now\n     [1] Done  [2] Abort" in text
    assert "you pressed: Abort" in text and "local: OK stop" in text
    updates = await bot.get_updates(timeout=0)
    assert updates[0].message.text == "/status"
    assert updates[1].callback_query.data == "a"


async def _echo(line: str) -> str:
    return f"OK {line}"
