"""The chat layer end to end: real python-telegram-bot over HTTP to the Bot API stand-in,
the real IBKR client to the simulated Gateway, a real SQLite file. Nothing of PTB is mocked."""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.config import ChecksConfig, Config, GatewayConfig, SoakConfig, TelegramConfig
from bot.health import Health
from bot.lab.chat import lab_chat
from bot.lab.simulator import SimulatedGateway
from bot.lab.telegram_standin import BotApiStandIn, BotMessage, User
from bot.lab.telegram_standin.faults import FaultKind
from bot.lab.telegram_standin.formatting import parse
from bot.services import with_gateway
from handlers.commands import _health_lines
from handlers.results import MESSAGE_LIMIT, fits_in_message, send_report, telegram_html

SQUAD, KAI, LEE, MALLORY, STRANGERS = -100, 42, 43, 666, -999


@dataclass
class Chat:
    standin: BotApiStandIn
    gateway: SimulatedGateway
    services: object

    def say(self, text: str, user: int = KAI, chat: int = SQUAD) -> int:
        """Send a message; returns the id the bot's answers will be newer than."""
        last = max((m.message_id for m in self.standin.messages(chat)), default=0)
        self.standin.send_text(chat, user, text)
        return last

    async def wait(self, predicate: Callable[[BotMessage], bool], after: int = 0, chat: int = SQUAD,
                   timeout: float = 15) -> BotMessage:
        return await self.standin.wait_for(lambda m: m.message_id > after and predicate(m), chat, timeout)

    async def ask(self, text: str, expect: str, **kw) -> BotMessage:
        after = self.say(text, **{k: v for k, v in kw.items() if k in ("user", "chat")})
        return await self.wait(lambda m: expect in m.text, after, kw.get("chat", SQUAD))


def chat_config(tmp_path, **checks) -> Config:
    config = Config(
        data_dir=tmp_path,
        soak=SoakConfig(duration=3, heartbeat_interval=1, progress_interval=0.5),
        checks=ChecksConfig(operator_timeout=checks.get("operator_timeout", 5), reconnect_within=5),
        telegram=TelegramConfig(progress_interval=1),
    )
    config = with_gateway(config, host="127.0.0.1", reconnect_delay=0.3, connect_timeout=2,
                          heartbeat_interval=1, heartbeat_timeout=1)
    if checks.get("backup"):  # a second Gateway: its /status opens a fresh connection each time
        config = replace(config, gateways=(*config.gateways, replace(config.gateway(), name="backup",
                                                                     port=checks["backup"])))
    return config


async def running_chat(tmp_path, **checks) -> AsyncIterator[Chat]:
    async with lab_chat(chat_config(tmp_path, **checks), [User(KAI, "Kai", "kai"), User(LEE, "Lee", "lee")],
                        {SQUAD: "squad"}, client_options={"probe_interval": 0.05}) as lab:
        lab.standin.user(MALLORY, "Mallory", "mallory")  # strangers: not on the allow-list
        lab.standin.group(STRANGERS, "strangers")
        assert lab.standin.commands, "the bot registered its command menu"
        yield Chat(lab.standin, lab.gateway, lab.services)


@pytest.fixture
async def chat(tmp_path):
    async for c in running_chat(tmp_path):
        yield c


@pytest.fixture
async def two_gateway_chat(tmp_path):
    """A second Gateway that hangs, so each /status of it holds a connection for its 2 s timeout."""
    async with SimulatedGateway(port=0) as hung:
        hung.freeze()
        async for c in running_chat(tmp_path, backup=hung.port):
            yield c


@pytest.fixture
async def impatient_chat(tmp_path):
    async for c in running_chat(tmp_path, operator_timeout=1.5):
        yield c


def buttons_of(m: BotMessage) -> list[str]:
    return [b.text for b in m.button_list]


async def test_help_and_command_menu(chat):
    reply = await chat.ask("/help", "/checklist - the whole Task 5.1 checklist")
    assert "/soak - stay connected" in reply.text
    assert ("status", "health of the Gateway, the check running now, the last result") in chat.standin.commands


async def test_connect_passes_and_reports_the_server_version(chat):
    started = await chat.ask("/connect", "started by Kai @kai (42): run #")
    result = await chat.wait(lambda m: "connect: passed" in m.text, started.message_id)
    assert "server version 178" in result.text
    report = await chat.wait(lambda m: m.text.startswith("Results"), result.message_id)
    assert "✅ Connected successfully (server version 178, accounts DUO779750" in report.text
    assert "##" not in report.text and "**" not in report.text, "sent formatted, not as raw markdown"
    bold = {report.text[e.offset:e.offset + e.length] for e in report.entities if e.type == "bold"}
    assert {"Results", "Status:", "Connection Test:"} <= bold


async def test_soak_edits_progress_in_place_and_sends_a_chart(chat):
    started = await chat.ask("/soak 0.05", "soak on paper")
    photo = await chat.wait(lambda m: m.kind == "photo", started.message_id)
    assert photo.file_bytes.startswith(b"\x89PNG") and photo.file_name == "gwbot-run-1-soak.png"
    progress = [m for m in chat.standin.messages(SQUAD) if m.text.startswith("⏳ soak")]
    assert len(progress) == 1, "one progress message, edited in place"
    assert progress[0].edits >= 1 and progress[0].disable_notification
    assert "▓" in progress[0].text and "last RTT" in progress[0].text
    edits = [c.mono for c in chat.standin.calls if c.method == "editMessageText"
             and c.params.get("message_id") == str(progress[0].message_id)]
    assert all(b - a >= 0.9 for a, b in itertools.pairwise(edits)), "edits at most every progress_interval"
    summary = next(m for m in chat.standin.messages(SQUAD) if "soak: passed" in m.text)
    assert "RTT median" in summary.text


async def test_guided_reconnect_end_to_end(chat):
    """The operator presses Done before the client has seen the drop: the prompt says who did it."""
    started = await chat.ask("/reconnect", "reconnect on paper")
    stop_prompt = await chat.wait(lambda m: "Stop the Gateway now" in m.text and bool(m.buttons), started.message_id)
    assert buttons_of(stop_prompt) == ["✅ Done", "✋ Abort"]
    chat.standin.press(SQUAD, KAI, stop_prompt.message_id, stop_prompt.button_list[0].data)
    done_stop = await chat.wait(lambda m: m.message_id == stop_prompt.message_id and not m.buttons)
    assert done_stop.text.endswith("\nDone by Kai @kai (42).")
    await asyncio.sleep(0.5)  # the check takes the answer once the edit's HTTP reply is back
    await chat.gateway.stop()
    start_prompt = await chat.wait(lambda m: "Start the Gateway again now" in m.text, stop_prompt.message_id)
    chat.standin.press(SQUAD, MALLORY, start_prompt.message_id, start_prompt.button_list[1].data)
    await asyncio.sleep(0.5)
    assert chat.standin.callback_answers[-1].text == "You may not act on this bot."
    await chat.gateway.start()
    result = await chat.wait(lambda m: "reconnect: passed" in m.text, start_prompt.message_id)
    assert "reconnected" in result.text and "attempt" in result.text
    run = await chat.services.repo.get_run(1)
    assert run.started_by == "Kai @kai (42)"
    steps = [(e.data["outcome"], e.data.get("by", "")) for e in run.events if e.kind == "operator_step"]
    assert ("done", "Kai @kai (42)") in steps
    # A press after the check ended changes nothing and is answered briefly.
    chat.standin.press(SQUAD, KAI, stop_prompt.message_id, stop_prompt.button_list[1].data)
    await asyncio.sleep(0.5)
    assert chat.standin.callback_answers[-1].text == "This step is already over."


async def test_guided_reconnect_moves_on_when_it_sees_the_drop_itself(chat):
    started = await chat.ask("/reconnect", "reconnect on paper")
    stop_prompt = await chat.wait(lambda m: "Stop the Gateway now" in m.text and bool(m.buttons), started.message_id)
    await chat.gateway.stop()
    seen = await chat.wait(lambda m: m.message_id == stop_prompt.message_id and not m.buttons)
    assert seen.text.endswith("\nI saw it happen myself; moving on.")
    start_prompt = await chat.wait(lambda m: "Start the Gateway again now" in m.text, stop_prompt.message_id)
    await chat.gateway.start()
    await chat.wait(lambda m: "reconnect: passed" in m.text, start_prompt.message_id)
    run = await chat.services.repo.get_run(1)
    assert [e.data["outcome"] for e in run.events if e.kind == "operator_step"][:2] == ["asked", "event"]


async def test_cancel_during_a_prompt_says_who_cancelled(chat):
    started = await chat.ask("/reconnect", "reconnect on paper")
    prompt = await chat.wait(lambda m: "Stop the Gateway now" in m.text and bool(m.buttons), started.message_id)
    await chat.ask("/cancel", "Cancelled reconnect")
    edited = await chat.wait(lambda m: m.message_id == prompt.message_id and not m.buttons)
    assert edited.text.endswith("\nCancelled by Kai @kai (42) with /cancel.")
    assert "saw it happen" not in edited.text


async def test_reconnect_operator_who_never_acts_gets_a_clear_failure(impatient_chat):
    started = await impatient_chat.ask("/reconnect", "reconnect on paper")
    result = await impatient_chat.wait(lambda m: "reconnect: failed" in m.text, started.message_id)
    assert "Nobody stopped the Gateway within 1.5 s" in result.text
    prompt = next(m for m in impatient_chat.standin.messages(SQUAD) if "Stop the Gateway now" in m.text)
    assert prompt.text.endswith("\nNobody answered in time; I stopped waiting.") and not prompt.buttons


async def test_cancel_mid_soak_and_one_check_at_a_time(chat):
    started = await chat.ask("/soak 1", "soak on paper")
    await chat.wait(lambda m: m.text.startswith("⏳ soak"), started.message_id)
    busy = await chat.ask("/soak 1", "already running")
    assert "started by Kai @kai (42)" in busy.text and "/cancel" in busy.text
    cancelled = await chat.ask("/cancel", "Cancelled soak")
    summary = await chat.wait(lambda m: "CANCELLED" in m.text, cancelled.message_id)
    assert "soak: cancelled" in summary.text
    assert (await chat.services.repo.get_run(1)).status == "cancelled"


async def test_status_answers_fast_while_a_soak_runs(chat):
    started = await chat.ask("/soak 0.2", "soak on paper")
    await chat.wait(lambda m: m.text.startswith("⏳ soak"), started.message_id)
    took = []
    for _ in range(3):
        begin = time.monotonic()
        reply = await chat.ask("/status", "Running now: soak")
        took.append(time.monotonic() - begin)
    assert "(from the running check)" in reply.text and "Server version 178" in reply.text
    assert max(took) < 1.0, f"/status took {max(took):.2f} s during a soak"
    await chat.ask("/cancel", "Cancelled")


async def test_strangers_are_refused_once_and_audited(chat):
    reply = await chat.ask("/status", "only answers its squad", user=MALLORY)
    assert "user id 666" in reply.text
    chat.say("/connect", user=MALLORY)
    chat.say("hello?", user=MALLORY, chat=STRANGERS)
    await chat.wait(lambda m: "only answers its squad" in m.text, chat=STRANGERS)
    await asyncio.sleep(0.5)
    refusals = [m for m in chat.standin.messages(SQUAD) if "only answers its squad" in m.text]
    assert len(refusals) == 1, "not repeated to a spammer"
    audit = await chat.services.repo.list_audit()
    assert [(a.username, a.action, a.allowed) for a in audit if not a.allowed][:2] == [
        ("@mallory", "message", False), ("@mallory", "/connect", False)]
    assert await chat.services.repo.list_runs() == [], "a refused /connect runs nothing"


async def test_an_edited_message_cannot_sneak_past_the_gate(chat):
    chat.say("hello", user=MALLORY)
    mallory_message = 1  # the first message in the fresh chat
    await chat.wait(lambda m: "only answers its squad" in m.text)
    chat.standin.edit_text(SQUAD, MALLORY, mallory_message, "/connect")
    await asyncio.sleep(1.0)
    assert await chat.services.repo.list_runs() == []
    audit = await chat.services.repo.list_audit()
    assert ("/connect", False) in [(a.action, a.allowed) for a in audit]


@pytest.mark.parametrize(("command", "answer"), [
    ("/soak abc", "Usage: /soak [minutes] [Gateway], minutes from 0.05 to 1440"),
    ("/soak -5", "Usage: /soak [minutes]"),
    ("/soak 100000", "Usage: /soak [minutes]"),
    ("/report 99999", "No run #99999. /history lists the runs."),
    ("/report abc", "Usage: /report [run number]"),
    ("/logs 1 2", "Usage: /logs [run number]"),
    ("/connect nowhere", "Unknown gateway 'nowhere'; configured: paper"),
    ("/frobnicate", "Unknown command /frobnicate. /help lists what I can do."),
    ("/connect 5", "Usage: /connect [Gateway] (Gateways: paper)"),
    ("/checklist paper now", "Usage: /checklist [Gateway] (Gateways: paper)"),
    ("/errors 1", "Usage: /errors [Gateway] (Gateways: paper)"),
    ("/disconnect 2", "Usage: /disconnect [Gateway]"),
    ("/reconnect 0", "Usage: /reconnect [Gateway]"),
    ("/status 5", "Usage: /status [Gateway]"),
    ("/cancel 5", "Usage: /cancel [Gateway]"),
    ("/history 5", "Usage: /history (no arguments)"),
    ("/help me", "Usage: /help (no arguments)"),
    ("/start 1", "Usage: /start (no arguments)"),
])
async def test_bad_input_gets_one_clear_line(chat, command, answer):
    reply = await chat.ask(command, answer)
    assert reply.text.count("\n") == 0
    assert await chat.services.repo.list_runs() == [], "nothing stored half-way"


async def test_an_unexpected_error_is_one_line_and_the_bot_keeps_serving(chat, monkeypatch):
    async def broken(*_args, **_kw):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(chat.services.repo, "list_runs", broken)
    reply = await chat.ask("/history", "Sorry, that failed (RuntimeError)")
    assert "disk on fire" not in reply.text
    monkeypatch.undo()
    await chat.ask("/history", "No runs yet")


async def test_flood_control_slows_progress_but_not_the_check(chat):
    chat.standin.faults.add(FaultKind.RETRY_AFTER, method="editMessageText", times=2)
    started = await chat.ask("/soak 0.05", "soak on paper")
    await chat.wait(lambda m: "soak: passed" in m.text, started.message_id)
    edits = [c for c in chat.standin.calls if c.method == "editMessageText"]
    assert [c.status for c in edits[:2]] == [429, 429]
    assert len(edits) >= 3 and edits[-1].status == 200, "the last state got through once Telegram allowed it"


async def test_a_long_report_comes_as_a_markdown_file(chat):
    run_id = await chat.services.repo.create_run("checklist", "paper", "x", "pytest", {})
    await chat.services.repo.add_logs(run_id, [(datetime.now(UTC), "WARNING", "bot", f"line {i} " + "x" * 200)
                                              for i in range(40)])
    await chat.services.repo.finish_run(run_id, "failed")
    run = await chat.services.repo.get_run(run_id)
    await send_report(chat.services.outbox, SQUAD, run)
    doc = await chat.wait(lambda m: m.kind == "document")
    assert doc.kind == "document" and doc.file_name == f"gwbot-run-{run_id}-checklist.md"
    assert len(doc.file_bytes) > MESSAGE_LIMIT and doc.file_bytes.startswith(b"## Results")


async def test_report_and_logs_commands(chat):
    started = await chat.ask("/connect", "connect on paper")
    await chat.wait(lambda m: "connect: passed" in m.text, started.message_id)
    report = await chat.ask("/report 1", "Results")
    assert "Status: ✅ PASSED" in report.text
    after = chat.say("/logs")
    log_file = await chat.wait(lambda m: m.kind == "document", after)
    assert log_file.file_name == "gwbot-run-1.log" and b"check connect passed" in log_file.file_bytes


async def other_traffic(chat: Chat, until: asyncio.Event, status: str = "/status") -> int:
    """Another person asking /status in the group and /help in private, over and over."""
    async def loop(command: str, expect: str, where: int) -> int:
        answered = 0
        while not until.is_set():
            await chat.ask(command, expect, user=LEE, chat=where)
            answered += 1
        return answered

    return sum(await asyncio.gather(loop(status, "Running now", SQUAD), loop("/help", "/checklist - ", LEE)))


async def test_errors_passes_with_other_traffic_going_on(two_gateway_chat):
    chat = two_gateway_chat
    over = asyncio.Event()
    # /status of the hung Gateway keeps a fresh API connection open right beside the rows'.
    traffic = asyncio.create_task(other_traffic(chat, over, "/status backup"))
    started = await chat.ask("/errors", "errors on paper")
    result = await chat.wait(lambda m: "errors:" in m.text and ("PASSED" in m.text or "FAILED" in m.text),
                             started.message_id, timeout=30)
    over.set()
    assert await asyncio.wait_for(traffic, 15) >= 2
    assert "✅ errors: passed, 7/7" in result.text, result.text


async def test_checklist_passes_with_other_traffic_going_on(two_gateway_chat):
    chat = two_gateway_chat
    over = asyncio.Event()
    traffic = asyncio.create_task(other_traffic(chat, over, "/status backup"))
    started = await chat.ask("/checklist", "checklist on paper")
    stop = await chat.wait(lambda m: "Stop the Gateway now" in m.text, started.message_id, timeout=30)
    await chat.gateway.stop()
    back = await chat.wait(lambda m: "Start the Gateway again now" in m.text, stop.message_id)
    await chat.gateway.start()
    result = await chat.wait(lambda m: "PASSED: checklist" in m.text or "FAILED: checklist" in m.text,
                             back.message_id, timeout=40)
    over.set()
    assert await asyncio.wait_for(traffic, 15) >= 2
    assert result.text.startswith("✅ PASSED: checklist"), result.text


async def test_a_slow_status_holds_up_nobody_else(chat):
    chat.gateway.freeze()  # /status's fresh connection now waits out its handshake timeout (2 s here)
    asked = time.monotonic()
    status_after = chat.say("/status")
    chat.say("/history")  # the same person: answered after the /status, in order
    await asyncio.sleep(0.2)  # A's /status is being handled
    helped = await chat.ask("/help", "/checklist - ", user=LEE)  # someone else, in the same group
    chat.standin.press(SQUAD, LEE, helped.message_id, "op:99:done")  # ... and a (stale) button
    for _ in range(50):
        if chat.standin.callback_answers:
            break
        await asyncio.sleep(0.02)
    help_took = time.monotonic() - asked
    assert chat.standin.callback_answers[-1].text == "This step is already over."
    assert not [m for m in chat.standin.messages(SQUAD) if m.message_id > status_after and "Running now" in m.text], \
        "A's /status still probing"
    status = await chat.wait(lambda m: "Running now" in m.text, status_after)
    status_took = time.monotonic() - asked
    assert "Problem:" in status.text
    assert help_took < 1.5 < status_took, (help_took, status_took)
    assert helped.sent_at < status.sent_at
    history = await chat.wait(lambda m: "No runs yet" in m.text, status_after)
    assert history.message_id > status.message_id, "one person's commands are answered in order"


TRICKY = """## Results <now> & "later"

_Run #3 by Bob <bob@example.com> & co, 5 * 3 s_

**Status:** ❌ FAILED **unclosed
- a < b && c > d, x_y_z, *one star*, 2**10
- `<code> & stuff`, then **bold `inline code`** too

**Logs:**
```
11:52:00 WARNING <tag> & **not bold** `not code`
```
"""


def test_report_markdown_becomes_telegram_html_that_parses():
    html = telegram_html(TRICKY)
    plain, entities = parse(html, "HTML")  # the stand-in's parser: Telegram's rules, raises on bad markup
    assert plain.splitlines() == [
        'Results <now> & "later"', "",
        "Run #3 by Bob <bob@example.com> & co, 5 * 3 s", "",
        "Status: ❌ FAILED **unclosed",
        "• a < b && c > d, x_y_z, *one star*, 2**10",
        "• <code> & stuff, then bold inline code too", "",
        "Logs:",
        "11:52:00 WARNING <tag> & **not bold** `not code`",
    ]
    spans = [(e.type, plain[e.offset:e.offset + e.length]) for e in entities]
    assert ("bold", 'Results <now> & "later"') in spans and ("bold", "Status:") in spans
    assert ("italic", "Run #3 by Bob <bob@example.com> & co, 5 * 3 s") in spans
    assert ("code", "<code> & stuff") in spans and ("bold", "bold inline code") in spans
    assert ("code", "inline code") in spans
    assert ("pre", "11:52:00 WARNING <tag> & **not bold** `not code`") in spans
    assert ("bold", "unclosed") not in spans and not any(t == "bold" and "10" in x for t, x in spans)


def test_message_or_file_is_decided_on_the_formatted_length():
    tags = "**x** " * 700  # 4200 characters of markdown, 1400 once formatted
    assert fits_in_message(telegram_html(tags))
    assert not fits_in_message(telegram_html("&" * 4097))  # 4097 characters, 20000+ once escaped
    assert fits_in_message(telegram_html("&" * 4096))


def test_status_says_an_uptime_in_the_alerts_words():
    since = datetime.now(UTC) - timedelta(seconds=75.4)
    health = Health(GatewayConfig(), server_version=178, accounts=("DU1",), connected_since=since, source="live")
    assert ", up 1 min 15 s" in "\n".join(_health_lines(health)), "the watch's alerts say '1 min 15 s' too"


async def test_start_up_objects_are_kept_out_of_full_collections_while_serving(tmp_path):
    # A full collection over start-up's ~130k objects stalled the shared loop 60-80 ms; frozen, it is
    # ~12 ms over what the watch adds. Given back when the chat stops, so nothing stays frozen for good.
    async for _ in running_chat(tmp_path):
        frozen = gc.get_freeze_count()
    assert frozen > 10_000 and gc.get_freeze_count() == 0
