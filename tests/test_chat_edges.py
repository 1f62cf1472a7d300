"""The chat front end at its edges: overlong input, commands for other bots, buttons gwbot never
made. Real PTB over HTTP to the Bot API stand-in (which refuses texts over 4096, as Telegram does)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from bot.lab.chat import lab_chat
from bot.lab.telegram_standin import User
from bot.lab.telegram_standin.faults import FaultKind
from handlers.results import MESSAGE_LIMIT
from handlers.telegram_html import fit_message, utf16_len
from tests.test_chat import KAI, LEE, MALLORY, SQUAD, STRANGERS, Chat, chat_config, running_chat

UNKNOWN_BUTTON = "This button is not one gwbot knows."


@pytest.fixture
async def chat(tmp_path):
    async for c in running_chat(tmp_path):
        yield c


async def answered_in_order(chat: Chat, text: str, user: int = KAI, where: int = SQUAD) -> list[str]:
    """What the bot said to ``text``: a /help from the same person follows it, and one person's
    updates are answered in order, so whatever came before the /help's answer is all of it."""
    after = chat.say(text, user=user, chat=where)
    chat.say("/help", user=user, chat=where)
    helped = await chat.wait(lambda m: "/checklist - " in m.text, after, chat=where)
    return [m.text for m in chat.standin.messages(where) if after < m.message_id < helped.message_id]


@pytest.mark.parametrize("command", [
    "/status " + "x" * 4088,
    "/connect " + "é" * 4087,
    "/mute 1h " + "y" * 4087,
    "/uptime " + "😀" * 2040,
    "/frobnicate" + "—" * 4000,  # Telegram's command entity ends at the dash; the word does not
])
async def test_a_reply_that_quotes_the_input_is_short(chat, command):
    said = await answered_in_order(chat, command)
    assert len(said) == 1 and said[0].count("\n") == 0 and len(said[0]) < 200, said


async def test_no_reply_dies_of_length(tmp_path):
    """Seventy 64-character Gateway names: /help and every usage line list them all."""
    config = chat_config(tmp_path)
    names = [f"gw{i:02d}-" + "n" * 59 for i in range(70)]
    config = replace(config, gateways=tuple(replace(config.gateway(), name=n) for n in names))
    async with lab_chat(config, [User(KAI, "Kai", "kai")], {SQUAD: "squad"}) as lab:
        chat = Chat(lab.standin, lab.gateway, lab.services)
        for command in ("/help", "/connect 5", "/status 5"):
            after = chat.say(command)
            answer = await chat.wait(lambda _: True, after)
            assert names[0] in answer.text and utf16_len(answer.text) <= MESSAGE_LIMIT
            assert answer.text.endswith("…")


def test_fit_message_cuts_in_utf16_units():
    assert fit_message("short") == "short"
    cut = fit_message("😀" * 3000)  # two UTF-16 units each
    assert utf16_len(cut) <= MESSAGE_LIMIT and cut.endswith("…") and cut.startswith("😀")


async def test_a_command_for_another_bot_is_ignored(chat):
    assert await answered_in_order(chat, "/status@otherbot") == []
    assert await answered_in_order(chat, "/frobnicate@otherbot now") == []
    chat.say("/status@otherbot", user=MALLORY, chat=STRANGERS)
    chat.say("/help", user=MALLORY, chat=STRANGERS)
    await chat.wait(lambda m: "only answers its squad" in m.text, chat=STRANGERS)
    refused = [a.action for a in await chat.services.repo.list_audit() if not a.allowed]
    assert refused == ["/help"], "a stranger's command for another bot is not refused either: it was not for us"
    ours = await answered_in_order(chat, "/status@gwbot_test_bot")
    assert len(ours) == 1 and "Running now: nothing" in ours[0]
    ours = await answered_in_order(chat, "/frobnicate@GWBOT_test_bot")
    assert ours == ["Unknown command /frobnicate@GWBOT_test_bot. /help lists what I can do."]


async def press(chat: Chat, data: str) -> str:
    helped = await chat.ask("/help", "/checklist - ", user=LEE)
    before = len(chat.standin.callback_answers)
    chat.standin.press(SQUAD, LEE, helped.message_id, data)
    async with asyncio.timeout(5):
        while len(chat.standin.callback_answers) == before:
            await asyncio.sleep(0.02)
    return chat.standin.callback_answers[-1].text


@pytest.mark.parametrize("data", ["zzz", "op:", "op:1", "op:x:done", "op:1:explode", "op:1:done:more",
                                  "ack:", "ack:not a ref!", "mute1h:" + "z" * 50, "opx:1:done",
                                  "ack:AAAAAAAAAAA"])  # well formed, but no watch runs here
async def test_a_button_gwbot_never_made_is_answered_so(chat, data):
    assert await press(chat, data) == UNKNOWN_BUTTON
    said = [m.text for m in chat.standin.messages(SQUAD) if "Sorry" in m.text]
    assert said == [], "no error message under someone's button"


async def test_a_stale_operator_button_is_still_over(chat):
    assert await press(chat, "op:99:done") == "This step is already over."


async def test_two_status_probes_at_once_both_reach_the_gateway(chat):
    chat.gateway.set_slow(49, 0.5)  # each probe's ping (reqCurrentTime) takes half a second: two overlap
    after = chat.say("/status")
    chat.say("/status", user=LEE)
    first = await chat.wait(lambda m: "Running now" in m.text, after)
    second = await chat.wait(lambda m: "Running now" in m.text, first.message_id)
    for answer in (first, second):
        assert "Server version 178" in answer.text and "Problem" not in answer.text, answer.text


async def test_a_question_telegram_refuses_fails_the_check_plainly_and_leaves_no_prompt_open(chat):
    chat.standin.faults.add(FaultKind.SERVER_ERROR, method="sendMessage", times=None)  # the chat unreachable
    chat.say("/reconnect")
    async with asyncio.timeout(10):
        while (run := await chat.services.repo.get_run(1)) is None or run.status == "running":
            await asyncio.sleep(0.05)
    check = run.checks[0]
    assert (run.status, check.status) == ("failed", "failed"), (run.status, check.status, check.error)
    assert check.error.startswith("Could not ask the operator to stop the Gateway"), check.error
    chat.standin.faults.clear()
    assert await press(chat, "op:1:done") == "This step is already over.", "the question was closed"
