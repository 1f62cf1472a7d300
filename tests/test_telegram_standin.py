"""The Bot API stand-in answers the real PTB Bot and Application like Telegram does, errors included."""

from __future__ import annotations

import asyncio
import io
import os
import re
import struct
import time
import zlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, Conflict, InvalidToken, RetryAfter
from telegram.ext import Application, ApplicationBuilder, CallbackQueryHandler, CommandHandler, ContextTypes

from bot.frontends.terminal import stdin_reader
from bot.lab.telegram_standin import BotApiStandIn, Button, ChangeKind, Command, MessageKind
from bot.lab.telegram_standin.faults import FaultKind
from bot.lab.telegram_standin.server import NOT_MODIFIED
from bot.lab.telegram_standin.terminal import TerminalChat

pytestmark = pytest.mark.timeout(20)

KAI = 42
SQUAD = -100
CHOICES = InlineKeyboardMarkup([[InlineKeyboardButton("Done", callback_data="done"),
                                 InlineKeyboardButton("Abort", callback_data="abort")]])


def png(width: int, height: int) -> bytes:
    """A real (grey) PNG image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.fixture
async def standin() -> AsyncIterator[BotApiStandIn]:
    async with BotApiStandIn() as s:
        s.user(KAI, "Kai", "kai")
        s.group(SQUAD, "squad")
        yield s


@pytest.fixture
async def bot(standin: BotApiStandIn) -> AsyncIterator[Bot]:
    async with Bot(standin.token, base_url=standin.base_url) as b:
        yield b


async def ping(update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
    await update.effective_message.reply_text("pong", reply_markup=CHOICES)


async def chosen(update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
    query = update.callback_query
    await query.answer(f"Got {query.data}")
    await query.edit_message_text(f"You chose {query.data}")


@pytest.fixture
async def app(standin: BotApiStandIn) -> AsyncIterator[Application]:
    """A real PTB Application polling the stand-in, with a /ping command and its buttons."""
    application = ApplicationBuilder().token(standin.token).base_url(standin.base_url).build()
    application.add_handler(CommandHandler("ping", ping))
    application.add_handler(CallbackQueryHandler(chosen))
    await application.initialize()
    await application.start()
    await application.updater.start_polling(poll_interval=0, timeout=1)
    try:
        yield application
    finally:
        started = time.monotonic()
        async with asyncio.timeout(5):
            await application.updater.stop()
            await application.stop()
            await application.shutdown()
        assert time.monotonic() - started < 2, "the Application stops without waiting out a long poll"


async def api(standin: BotApiStandIn, method: str, token: str | None = None, **kw) -> tuple[int, dict]:
    """A raw HTTP call, to check the wire format itself."""
    async with aiohttp.ClientSession() as http:
        url = f"{standin.base_url}{token or standin.token}/{method}"
        async with http.request(kw.pop("http_method", "POST"), url, **kw) as response:
            return response.status, await response.json()


# ------------------------------------------------------------------ Bot API


async def test_get_me_and_token_errors(standin, bot):
    me = await bot.get_me()
    assert (me.id, me.username, me.is_bot) == (123456, "gwbot_test_bot", True)
    with pytest.raises(InvalidToken):
        async with Bot("999:wrong", base_url=standin.base_url):
            pass
    assert [c.method for c in standin.calls] == ["getMe", "getMe"], "a wrong token never reaches a method"
    assert await api(standin, "getMe", token="999:wrong") == (
        401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
    assert await api(standin, "frobnicate") == (404, {"ok": False, "error_code": 404, "description": "Not Found"})
    status, body = await api(standin, "getMe", http_method="GET")
    assert status == 200 and body["ok"] and body["result"]["username"] == "gwbot_test_bot"


async def test_parameters_arrive_as_form_json_or_query(standin):
    markup = '{"inline_keyboard": [[{"text": "Go", "callback_data": "go"}]]}'
    status, body = await api(standin, "sendMessage", data={"chat_id": str(KAI), "text": "form",
                                                           "reply_markup": markup})
    assert status == 200 and body["result"]["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "go"
    status, body = await api(standin, "sendMessage",
                             json={"chat_id": KAI, "text": "json", "disable_notification": True})
    assert status == 200 and standin.messages(KAI)[-1].disable_notification
    status, body = await api(standin, "sendMessage", http_method="GET", params={"chat_id": str(KAI), "text": "query"})
    assert status == 200 and [m.text for m in standin.messages(KAI)] == ["form", "json", "query"]
    assert await api(standin, "sendMessage", data={"chat_id": str(KAI), "text": "x", "reply_markup": "{oops"}) == (
        400, {"ok": False, "error_code": 400,
              "description": "Bad Request: can't parse reply keyboard markup JSON object"})


async def test_send_message_with_an_inline_keyboard_reads_back(standin, bot):
    sent = await bot.send_message(KAI, "Stop the Gateway, then /status", reply_markup=CHOICES,
                                  disable_notification=True)
    assert sent.from_user.is_bot and sent.chat.id == KAI and sent.chat.type == "private"
    assert sent.reply_markup.inline_keyboard[0][1].callback_data == "abort"
    assert [(e.type, e.offset, e.length) for e in sent.entities] == [("bot_command", 23, 7)]
    stored = standin.messages(KAI)[0]
    assert (stored.message_id, stored.kind, stored.text) == (sent.message_id, MessageKind.TEXT, sent.text)
    assert stored.buttons == ((Button("Done", "done"), Button("Abort", "abort")),)
    assert stored.disable_notification and stored.edits == 0 and stored.sent_at <= time.monotonic()

    question = standin.send_text(SQUAD, KAI, "is it up?")
    (update,) = await bot.get_updates()
    assert update.update_id == question and update.message.text == "is it up?"
    assert (update.message.chat.id, update.message.from_user.id, update.message.message_id) == (SQUAD, KAI, 1)
    asked = standin.messages(SQUAD)  # people's messages are not the bot's
    assert asked == []
    reply = await bot.send_message(SQUAD, "yes", reply_parameters=ReplyParameters(1))
    assert reply.message_id == 2 and reply.reply_to_message.text == "is it up?"
    assert reply.chat.title == "squad"
    with pytest.raises(BadRequest, match="Message to be replied not found"):
        await bot.send_message(SQUAD, "yes", reply_parameters=ReplyParameters(99))


async def test_parse_modes_give_plain_text_and_entities_or_telegrams_error(standin, bot):
    sent = await bot.send_message(KAI, "<b>Gateway</b> is &lt;up&gt;", parse_mode=ParseMode.HTML)
    assert sent.text == "Gateway is <up>" and [(e.type, e.length) for e in sent.entities] == [("bold", 7)]
    with pytest.raises(BadRequest, match=r"^Unsupported parse_mode$"):  # gwbot sends HTML only
        await bot.send_message(KAI, "*RTT* 1\\.5 ms", parse_mode=ParseMode.MARKDOWN_V2)
    with pytest.raises(BadRequest, match='Can\'t parse entities: can\'t find end tag corresponding to start tag "b"'):
        await bot.send_message(KAI, "<b>unclosed", parse_mode=ParseMode.HTML)
    assert [m.text for m in standin.messages(KAI)] == ["Gateway is <up>"]


async def test_edits_and_telegrams_edit_errors(standin, bot):
    sent = await bot.send_message(KAI, "Stop the Gateway now", reply_markup=CHOICES)
    with pytest.raises(BadRequest) as refused:
        await bot.edit_message_text("Stop the Gateway now", KAI, sent.message_id, reply_markup=CHOICES)
    assert refused.value.message == NOT_MODIFIED.removeprefix("Bad Request: ").capitalize()
    status, body = await api(standin, "editMessageText", data={"chat_id": str(KAI), "message_id": str(sent.message_id),
                                                               "text": "Stop the Gateway now",
                                                               "reply_markup": CHOICES.to_json()})
    assert (status, body["description"]) == (400, NOT_MODIFIED)

    edited = await bot.edit_message_text("Stopped.", KAI, sent.message_id)
    assert edited.text == "Stopped." and edited.edit_date is not None and edited.reply_markup is None
    current = standin.messages(KAI)[0]
    assert (current.text, current.edits, current.buttons) == ("Stopped.", 1, ())
    assert current.edited_at is not None and current.edited_at >= current.sent_at
    with pytest.raises(BadRequest, match=r"^Message to edit not found$"):
        await bot.edit_message_text("x", KAI, 999)


async def test_bad_requests_read_like_telegrams(standin, bot):
    with pytest.raises(BadRequest, match=r"^Chat not found$"):
        await bot.send_message(12345, "hello?")
    with pytest.raises(BadRequest, match=r"^Message text is empty$"):
        await bot.send_message(KAI, " ")
    with pytest.raises(BadRequest, match=r"^Message is too long$"):
        await bot.send_message(KAI, "🟢" * 2049)  # 4098 UTF-16 code units
    too_long = InlineKeyboardMarkup([[InlineKeyboardButton("x", callback_data="x" * 65)]])
    with pytest.raises(BadRequest, match=r"^Button_data_invalid$"):
        await bot.send_message(KAI, "pick", reply_markup=too_long)
    with pytest.raises(BadRequest, match=r"^Query is too old"):
        await bot.answer_callback_query("no-such-query")
    assert await api(standin, "sendMessage", data={"text": "x"}) == (
        400, {"ok": False, "error_code": 400, "description": "Bad Request: chat_id is empty"})
    assert await api(standin, "sendMessage", data={"chat_id": "²", "text": "x"}) == (  # not a number: no such chat
        400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"})
    assert standin.messages(KAI) == []
    assert [c.status for c in standin.calls if c.method == "sendMessage"] == [400, 400, 400, 400, 400, 400]


async def test_files_round_trip(standin, bot):
    report = b"# Report\n" + b"x" * 1225
    doc = await bot.send_document(KAI, io.BytesIO(report), filename="r.md", caption="Report")
    photo = await bot.send_photo(KAI, png(3, 2), caption="chart")
    assert (doc.document.file_name, doc.document.file_size, doc.caption) == ("r.md", len(report), "Report")
    assert (photo.photo[-1].width, photo.photo[-1].height, photo.photo[-1].file_size) == (3, 2, len(png(3, 2)))
    stored = [(m.kind, m.file_name, m.file_bytes, m.mime_type, m.text) for m in standin.messages(KAI)]
    assert stored[0] == (MessageKind.DOCUMENT, "r.md", report, "text/markdown", "Report")
    assert stored[1][0] == MessageKind.PHOTO and stored[1][2] == png(3, 2) and stored[1][4] == "chart"
    with pytest.raises(BadRequest, match=r"^Image_process_failed$"):
        await bot.send_photo(KAI, b"not an image")
    with pytest.raises(BadRequest, match=r"^Message caption is too long$"):
        await bot.send_document(KAI, b"x", filename="x.txt", caption="c" * 1025)
    assert len(standin.messages(KAI)) == 2


async def test_flood_control(standin, bot):
    standin.faults.add(FaultKind.RETRY_AFTER, method="sendMessage", times=2, seconds=2)
    for _ in range(2):
        with pytest.raises(RetryAfter) as flooded:
            await bot.send_message(KAI, "too fast")
        assert flooded.value.retry_after in (2, timedelta(seconds=2))
    await bot.send_message(KAI, "fine now")
    assert [m.text for m in standin.messages(KAI)] == ["fine now"]
    assert [c.status for c in standin.calls if c.method == "sendMessage"] == [429, 429, 200]
    standin.faults.add(FaultKind.RETRY_AFTER, method="getMe", seconds=7)
    assert await api(standin, "getMe") == (429, {"ok": False, "error_code": 429,
                                                 "description": "Too Many Requests: retry after 7",
                                                 "parameters": {"retry_after": 7}})


async def test_command_menu(standin, bot):
    await bot.set_my_commands([("status", "health of the Gateway"), ("ping", "are you there?")])
    assert standin.commands == [("status", "health of the Gateway"), ("ping", "are you there?")]
    assert standin.commands[0] == Command("status", "health of the Gateway")
    with pytest.raises(BadRequest, match=r"^Bot_command_invalid$"):
        await bot.set_my_commands([("Not A Command", "x")])


async def test_long_poll_returns_as_soon_as_an_update_arrives(standin, bot):
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.2)
    assert not poll.done(), "nothing to deliver: the poll waits"
    sent_at = time.monotonic()
    update_id = standin.send_text(KAI, KAI, "/ping@gwbot_test_bot now")
    updates = await poll
    assert time.monotonic() - sent_at < 0.5
    message = updates[0].message
    assert updates[0].update_id == update_id and message.text == "/ping@gwbot_test_bot now"
    assert (message.entities[0].type, message.entities[0].offset, message.entities[0].length) == ("bot_command", 0, 20)
    assert message.from_user.username == "kai"
    assert len(await bot.get_updates(timeout=0)) == 1, "not confirmed yet: delivered again"
    assert await bot.get_updates(offset=update_id + 1, timeout=0) == (), "the offset confirmed it"
    started = time.monotonic()
    assert await bot.get_updates(timeout=timedelta(seconds=0.3)) == ()
    assert 0.25 < time.monotonic() - started < 1.0


async def test_a_second_long_poll_ends_the_first_with_a_conflict(standin, bot):
    first = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.1)
    async with Bot(standin.token, base_url=standin.base_url) as second_instance:
        assert await second_instance.get_updates(timeout=0) == ()
    with pytest.raises(Conflict, match="terminated by other getUpdates request"):
        await first


async def test_stale_buttons_are_still_delivered(standin, bot):
    sent = await bot.send_message(KAI, "Pick", reply_markup=CHOICES)
    await bot.edit_message_text("Picked", KAI, sent.message_id)
    query_id = standin.press(KAI, KAI, sent.message_id, "done")
    updates = await bot.get_updates(timeout=1)
    query = updates[0].callback_query
    assert (query.id, query.data, query.message.text, query.from_user.id) == (query_id, "done", "Picked", KAI)
    assert await query.answer("This step is already over.")
    assert standin.callback_answers[-1].text == "This step is already over."


async def test_wait_for_and_subscribe(standin, bot):
    changes = standin.subscribe()
    sent = await bot.send_message(KAI, "one")
    assert (await standin.wait_for(lambda m: m.text == "one", KAI)).message_id == sent.message_id
    waiting = asyncio.create_task(standin.wait_for(lambda m: m.text == "two", KAI, timeout=2))
    await asyncio.sleep(0.05)
    await bot.edit_message_text("two", KAI, sent.message_id)
    assert (await waiting).edits == 1
    assert [(c.kind, c.message.text) for c in [changes.get_nowait(), changes.get_nowait()]] == [
        (ChangeKind.NEW, "one"), (ChangeKind.EDIT, "two")]
    standin.unsubscribe(changes)
    with pytest.raises(TimeoutError, match=r"(?s)within 0.2 s.*#1 text \(edits 1\): 'two'"):
        await standin.wait_for(lambda m: m.text == "three", KAI, timeout=0.2)


# -------------------------------------------------------- PTB Application


async def test_a_command_reaches_the_application_and_its_reply_appears(standin, app):
    standin.send_text(SQUAD, KAI, "/ping@someone_elses_bot")  # for another bot: PTB ignores it
    standin.send_text(SQUAD, KAI, "/ping@gwbot_test_bot")
    pong = await standin.wait_for(lambda m: m.text == "pong", SQUAD, timeout=5)
    assert pong.button_list == [Button("Done", "done"), Button("Abort", "abort")]
    assert pong.reply_to_message_id == 2, "PTB quotes the command in a group"
    await asyncio.sleep(0.2)
    assert [m.text for m in standin.messages(SQUAD)] == ["pong"], "one answer, to the command for this bot"


async def test_a_button_press_reaches_the_callback_handler(standin, app):
    standin.send_text(KAI, KAI, "/ping")
    pong = await standin.wait_for(lambda m: m.text == "pong", KAI, timeout=5)
    query_id = standin.press(KAI, KAI, pong.message_id, "abort")
    done = await standin.wait_for(lambda m: m.text == "You chose abort", KAI, timeout=5)
    assert done.message_id == pong.message_id and done.edits == 1 and done.buttons == ()
    answer = standin.callback_answers[-1]
    assert (answer.callback_query_id, answer.text, answer.show_alert, answer.user_id) == (
        query_id, "Got abort", False, KAI)


async def test_terminal_chat_over_a_pipe(standin, app, bot, tmp_path: Path):
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as pipe:
        out = io.StringIO()
        terminal = TerminalChat(standin, KAI, KAI, files_dir=tmp_path, linger=0.1)
        run = asyncio.create_task(terminal.run(stdin_reader(pipe), out))
        os.write(write_end, b"/ping\n")
        pong = await standin.wait_for(lambda m: m.text == "pong", KAI, timeout=5)
        os.write(write_end, b"1\n")
        await standin.wait_for(lambda m: m.message_id == pong.message_id and m.edits == 1, KAI, timeout=5)
        await bot.send_document(KAI, b"#" * 1234, filename="report.md")
        os.close(write_end)  # EOF ends the chat
        await asyncio.wait_for(run, 5)
    transcript = out.getvalue()
    assert transcript.startswith("you: /ping\nbot: pong\n     [1] Done  [2] Abort\nyou: 1\nyou pressed: Done\n")
    assert "bot (toast): Got done\n" in transcript
    assert "bot (edited): You chose done\n" in transcript
    assert f"bot: [document report.md, 1.2 kB]\n     saved to {tmp_path / 'report.md'}\n" in transcript
    assert (tmp_path / "report.md").read_bytes() == b"#" * 1234


async def test_terminal_numbers_pick_from_the_latest_message_with_buttons(standin, bot):
    reader = asyncio.StreamReader()
    out = io.StringIO()
    terminal = TerminalChat(standin, KAI, KAI, linger=0.05, echo=False)
    run = asyncio.create_task(terminal.run(reader, out))
    await asyncio.sleep(0)
    older = await bot.send_message(KAI, "older", reply_markup=CHOICES)
    newer = await bot.send_message(KAI, "newer", reply_markup=InlineKeyboardMarkup(
        [[InlineKeyboardButton("Yes", callback_data="yes")]]))
    await bot.send_message(KAI, "no buttons here")
    reader.feed_data(b"1\n3\n")
    await asyncio.sleep(0.05)
    await bot.edit_message_text("newer, answered", KAI, newer.message_id)  # its buttons go away
    await asyncio.sleep(0.05)
    reader.feed_data(b"2\nhello\n/quit\nnever sent\n")
    await asyncio.wait_for(run, 5)
    transcript = out.getvalue()
    assert "you pressed: Yes\n(no button 3; pick 1-1)\n" in transcript
    assert "bot (edited): newer, answered\nyou pressed: Abort\n" in transcript
    updates = await bot.get_updates(timeout=0)
    assert [(u.callback_query.message.message_id, u.callback_query.data) for u in updates if u.callback_query] == [
        (newer.message_id, "yes"), (older.message_id, "abort")]
    assert [u.message.text for u in updates if u.message] == ["hello"]


async def test_terminal_keeps_sent_file_names_and_never_overwrites(standin, bot, tmp_path: Path):
    reader = asyncio.StreamReader()
    out = io.StringIO()
    terminal = TerminalChat(standin, KAI, KAI, files_dir=tmp_path, linger=0.2, echo=False)
    run = asyncio.create_task(terminal.run(reader, out))
    await asyncio.sleep(0)
    await bot.send_document(KAI, b"first", filename="report.md")
    await bot.send_document(KAI, b"second", filename="report.md")
    chart = await bot.send_photo(KAI, png(4, 3))  # PTB names bytes "application.octet-stream"
    await bot.send_photo(KAI, png(4, 3), filename="chart.png")
    reader.feed_eof()
    await asyncio.wait_for(run, 5)
    assert (tmp_path / "report.md").read_bytes() == b"first"
    assert (tmp_path / "report-2.md").read_bytes() == b"second"
    assert (tmp_path / f"photo-{chart.message_id}.png").read_bytes() == png(4, 3)
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["report.md", "report-2.md", f"photo-{chart.message_id}.png", "chart.png"])


@pytest.mark.parametrize(("markup", "error"), [
    ("<h2>Results</h2>", 'Unsupported start tag "h2" at byte offset 0'),
    ("<b><i>x</b></i>", 'Unmatched end tag at byte offset 7, expected "</i>", found "</b>"'),
    ("x</b>", "Unexpected end tag at byte offset 1"),
    ("<pre>open", 'Can\'t find end tag corresponding to start tag "pre"'),
    ("line<br/>break", 'Unsupported start tag "br" at byte offset 4'),
])
async def test_html_that_telegram_refuses_is_refused(standin, bot, markup, error):
    with pytest.raises(BadRequest, match="Can't parse entities: " + re.escape(error[0].lower() + error[1:])):
        await bot.send_message(KAI, markup, parse_mode=ParseMode.HTML)
    assert standin.messages(KAI) == []


async def test_only_the_methods_gwbot_calls_are_served(standin):
    from bot.lab.telegram_standin.server import ROUTES
    assert set(ROUTES) == {"getme", "deletewebhook", "getupdates", "sendmessage", "editmessagetext", "senddocument",
                           "sendphoto", "answercallbackquery", "setmycommands"}
    for method in ("deleteMessage", "sendChatAction", "getMyCommands"):
        assert await api(standin, method, data={"chat_id": str(KAI)}) == (
            404, {"ok": False, "error_code": 404, "description": "Not Found"})
