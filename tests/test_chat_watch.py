"""The watch wired into the chat: real PTB over HTTP to the Bot API stand-in, the real simulated
Gateway, a real SQLite file, alerts through the durable outbox. Nothing is mocked."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from bot.config import WatchConfig
from bot.lab.chat import lab_chat
from bot.lab.telegram_standin import User
from bot.watch.state import Phase
from tests.conftest import FAST, free_port
from tests.test_chat import KAI, LEE, SQUAD, Chat, chat_config
from tests.test_run import ROOT, gwbot_chat

SUBSCRIBER = KAI  # Kai's private chat with the bot (chat id = user id) /subscribes
WATCH_OPTIONS = {"knock_interval": 0.05, "max_pause": 0.3}


async def _until(predicate, timeout: float = 8.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


@pytest.fixture
async def watched(tmp_path):
    """A chat whose Gateway is watched; the squad's group is the alert chat."""
    config = replace(chat_config(tmp_path), watch=WatchConfig(alert_chat_ids=frozenset({SQUAD}), down_after=0.3,
                                                              expected=(), relogin_reminder=0))
    async with lab_chat(config, [User(KAI, "Kai", "kai"), User(LEE, "Lee", "lee")], {SQUAD: "squad"},
                        client_options={"probe_interval": FAST.probe_interval}, watch_options=WATCH_OPTIONS) as lab:
        await _until(lambda: lab.services.watch.watcher().state.phase is Phase.UP)
        yield Chat(lab.standin, lab.gateway, lab.services)


def alerts(chat: Chat, mark: str, chat_id: int = SQUAD) -> list:
    return [m for m in chat.standin.messages(chat_id) if m.text.startswith(mark)]


async def test_stop_sends_red_then_start_sends_green_with_the_downtime(watched):
    await watched.gateway.stop()
    down = await watched.wait(lambda m: m.text.startswith("🔴"))
    assert "paper" in down.text and not down.disable_notification, "loud"
    assert [b.text for b in down.button_list] == ["Acknowledge", "Mute 1h"]
    await watched.gateway.start()
    up = await watched.wait(lambda m: m.text.startswith("🟢"), down.message_id)
    assert up.disable_notification, "a recovery is quiet"
    assert "back after" in up.text


async def test_acknowledge_edits_the_alert_to_say_who_and_a_second_press_says_taken(watched):
    await watched.gateway.stop()
    down = await watched.wait(lambda m: m.text.startswith("🔴"))
    watched.standin.press(SQUAD, LEE, down.message_id, down.button_list[0].data)
    edited = await watched.wait(lambda m: m.message_id == down.message_id and m.edits >= 1 and "lee" in m.text)
    assert not edited.button_list or "Acknowledge" not in [b.text for b in edited.button_list]
    watched.standin.press(SQUAD, KAI, down.message_id, down.button_list[0].data)
    await _until(lambda: any("taken by @lee" in a.text for a in watched.standin.callback_answers))
    assert len(alerts(watched, "🔴")) == 1, "edited in place, not a new message"
    await watched.gateway.start()


async def test_a_subscribed_chat_gets_the_alerts_and_unsubscribe_stops_them(watched):
    await watched.ask("/subscribe", "now gets the watch's alerts", chat=SUBSCRIBER, user=KAI)
    await watched.gateway.stop()
    await watched.wait(lambda m: m.text.startswith("🔴"), chat=SUBSCRIBER)
    await watched.wait(lambda m: m.text.startswith("🔴"))  # and still the configured alert chat
    await watched.gateway.start()
    await watched.wait(lambda m: m.text.startswith("🟢"), chat=SUBSCRIBER)
    await watched.ask("/unsubscribe", "no longer gets", chat=SUBSCRIBER, user=KAI)
    assert await watched.services.repo.subscribers.chat_ids() == []


async def test_mute_silences_alerts_and_unmute_brings_them_back(watched):
    await watched.ask("/mute 1h", "muted until")
    await watched.gateway.stop()
    await _until(lambda: watched.services.watch.watcher().state.phase is Phase.DOWN)
    await asyncio.sleep(1.0)  # well past down_after: a 🔴 would be out by now
    assert alerts(watched, "🔴") == []
    await watched.gateway.start()
    await _until(lambda: watched.services.watch.watcher().state.phase is Phase.UP)
    await watched.ask("/unmute", "on again")
    await watched.gateway.stop()
    await watched.wait(lambda m: m.text.startswith("🔴"))
    await watched.gateway.start()


async def test_mute_takes_a_duration_and_says_how(watched):
    await watched.ask("/mute", "Usage: /mute DURATION")
    await watched.ask("/mute soon", "Usage: /mute DURATION")
    await watched.ask("/mute 1h nowhere", "Unknown gateway")


async def test_a_reconnect_checks_stop_sends_no_red(watched):
    started = await watched.ask("/reconnect", "reconnect on paper")
    stop_prompt = await watched.wait(lambda m: "Stop the Gateway now" in m.text and bool(m.buttons), started.message_id)
    watched.standin.press(SQUAD, KAI, stop_prompt.message_id, stop_prompt.button_list[0].data)
    await asyncio.sleep(0.5)
    await watched.gateway.stop()
    start_prompt = await watched.wait(lambda m: "Start the Gateway again now" in m.text, stop_prompt.message_id)
    await asyncio.sleep(1.0)  # past down_after
    await watched.gateway.start()
    await watched.wait(lambda m: "reconnect: passed" in m.text, start_prompt.message_id)
    assert alerts(watched, "🔴") == [], "the check's own stop is no outage"
    # The watcher's connection errors are not the check's: the run logged none of them.
    run = await watched.services.repo.get_run(1)
    assert run.status == "passed"
    assert run.logs and not any(line.logger.startswith("gwbot.watch") for line in run.logs)
    errors = next(c for c in run.checks if c.name == "reconnect")
    assert errors.status == "passed"


async def _step(chat: Chat, run_id: int, name: str, running: bool) -> None:
    """Until the run's check ``name`` is running (or has ended), as stored."""
    async with asyncio.timeout(20):
        while True:
            run = await chat.services.repo.get_run(run_id)
            check = run.check(name) if run is not None else None
            if check is not None and (check.status == "running") == running:
                return
            await asyncio.sleep(0.02)


async def test_a_checklist_expects_only_its_reconnect_steps_stop(watched):
    """A real outage during the checklist's soak is an outage (🔴); the reconnect step's own stop is the test's."""
    began = datetime.now(UTC)
    watcher = watched.services.watch.watcher()
    started = await watched.ask("/checklist", "checklist on paper")
    await _step(watched, 1, "soak", running=True)
    await watched.gateway.wait_for_clients(2)  # the watch's and the soak's: the soak is connected, then the outage
    await watched.gateway.stop()
    down = await watched.wait(lambda m: m.text.startswith("🔴"), started.message_id, timeout=5)
    assert watcher.state.incident.test is None
    await watched.gateway.start()
    await watched.wait(lambda m: m.text.startswith("🟢"), down.message_id)
    stop_prompt = await watched.wait(lambda m: "Stop the Gateway now" in m.text, down.message_id, timeout=20)
    await watched.gateway.stop()
    await watched.wait(lambda m: "Start the Gateway again now" in m.text, stop_prompt.message_id)
    await _until(lambda: watcher.state.incident is not None)
    assert watcher.state.incident.test == "reconnect check"
    await watched.gateway.start()
    await _step(watched, 1, "reconnect", running=False)
    assert (await watched.services.repo.get_run(1)).check("reconnect").status == "passed"
    await _until(lambda: watcher.state.phase is Phase.UP and watcher.state.incident is None)
    # What /status shows changes a moment before the store has the closed incident: wait for the store.
    async with asyncio.timeout(5):
        while True:
            stored = await watched.services.repo.incidents.incidents("paper", began, datetime.now(UTC))
            if all(i.ended_at is not None for i in stored):
                break
            await asyncio.sleep(0.02)
    assert [(i.test, i.alerted, i.ended_at is not None) for i in stored] == [(None, True, True),
                                                                             ("reconnect check", False, True)]
    assert len(alerts(watched, "🔴")) == 1


async def test_a_gateway_named_with_60_characters_is_reached_by_status(tmp_path):
    name = "paper-" + "x" * 54
    config = chat_config(tmp_path)
    config = replace(config, gateways=(replace(config.gateway(), name=name),),
                     watch=WatchConfig(expected=(), relogin_reminder=0))
    async with lab_chat(config, [User(KAI, "Kai", "kai")], {SQUAD: "squad"},
                        client_options={"probe_interval": FAST.probe_interval}, watch_options=WATCH_OPTIONS) as lab:
        chat = Chat(lab.standin, lab.gateway, lab.services)
        await _until(lambda: lab.services.watch.watcher(name).state.phase is Phase.UP)
        reply = await chat.ask(f"/status {name}", name)
        assert reply.text.startswith("🟢") and "(from the watch)" in reply.text


async def test_status_answers_from_the_watch_while_the_gateway_is_frozen(watched):
    watched.gateway.freeze()
    await _until(lambda: watched.services.watch.watcher().state.phase is Phase.DOWN, timeout=10)
    began = time.monotonic()
    reply = await watched.ask("/status", "paper")
    assert time.monotonic() - began < 1.5, "no probe waiting on the frozen Gateway's timeout"
    assert "(from the watch)" in reply.text and reply.text.startswith("🔴")
    assert "Problem:" in reply.text and "since" in reply.text
    watched.gateway.unfreeze()


async def test_uptime_sends_text_and_a_timeline_png(watched):
    await watched.gateway.stop()
    await watched.wait(lambda m: m.text.startswith("🔴"))
    await watched.gateway.start()
    await watched.wait(lambda m: m.text.startswith("🟢"))
    after = watched.say("/uptime")
    text = await watched.wait(lambda m: "24 h" in m.text, after)
    photo = await watched.wait(lambda m: m.kind == "photo", after)
    assert photo.file_bytes.startswith(b"\x89PNG")
    assert "paper" in text.text


async def test_the_errors_matrix_passes_while_the_watch_holds_its_own_connection(watched):
    """The watcher's client and its log lines are not the check's: the matrix judges only its own."""
    started = await watched.ask("/errors", "errors on paper")
    result = await watched.wait(lambda m: "errors:" in m.text and ("passed" in m.text or "failed" in m.text),
                                started.message_id, timeout=30)
    assert "errors: passed" in result.text
    assert watched.services.watch.watcher().state.phase is Phase.UP


async def _line_with(proc: asyncio.subprocess.Process, text: str, timeout: float) -> str:
    async with asyncio.timeout(timeout):
        while text not in (line := (await proc.stdout.readline()).decode()):
            assert line, f"gwbot chat ended before {text!r}"
    return line


async def test_gwbot_chat_reports_a_stopped_simulator_at_once_and_its_return(tmp_path):
    """`gwbot chat`: !stop brings 🔴 to the terminal within about a second, !start 🟢 with the downtime."""
    async with gwbot_chat(tmp_path, "data_dir: data\nwatch: {expected: [], relogin_reminder: 0}\n") as proc:
        async with asyncio.timeout(30):  # until the watch has its verdict (before, /status probes)
            while True:
                proc.stdin.write(b"/status\n")
                await proc.stdin.drain()
                if "(from the watch)" in await _line_with(proc, " paper 127.0.0.1:", 30):
                    break
        proc.stdin.write(b"!stop\n")
        await proc.stdin.drain()
        began = time.monotonic()
        await _line_with(proc, "🔴", 10)
        took = time.monotonic() - began
        proc.stdin.write(b"!start\n")
        await proc.stdin.drain()
        back = await _line_with(proc, "🟢", 15)
        assert "back after" in back
        assert took < 3.0, f"🔴 after {took:.2f} s (down_after 0.5 s; generous for a busy machine)"


async def _simulate(port: int, control_port: int) -> asyncio.subprocess.Process:
    """`gwbot simulate` in its own process, as in another terminal; returns once it listens."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "simulate", "--port", str(port), "--control-port", str(control_port),
        cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    await asyncio.wait_for(proc.stdout.readline(), 20)  # the banner: printed once it listens
    return proc


async def test_gwbot_chat_attached_to_another_simulate_reports_its_kill_and_its_return(tmp_path):
    """The done-when of the watch: `gwbot chat` watching a `gwbot simulate` of another terminal."""
    port, control_port = free_port(), free_port()
    sims = [await _simulate(port, control_port)]
    try:
        async with gwbot_chat(tmp_path, "data_dir: data\nwatch: {expected: [], relogin_reminder: 0}\n",
                              "--attach", str(port), "--control-port", str(control_port)) as proc:
            async with asyncio.timeout(30):  # until the watch has its verdict
                while True:
                    proc.stdin.write(b"/status\n")
                    await proc.stdin.drain()
                    if "(from the watch)" in await _line_with(proc, f" paper 127.0.0.1:{port}", 30):
                        break
            sims[0].kill()  # SIGKILL: the Gateway process dies without a word
            await sims[0].wait()
            began = time.monotonic()
            await _line_with(proc, "🔴", 10)
            took = time.monotonic() - began
            sims.append(await _simulate(port, control_port))
            back = await _line_with(proc, "🟢", 20)
            assert "back after" in back
            assert took < 3.0, f"🔴 after {took:.2f} s (down_after 0.5 s; generous for a busy machine)"
    finally:
        for sim in sims:
            if sim.returncode is None:
                sim.kill()
                await sim.wait()
