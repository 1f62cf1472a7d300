"""The outbox in the whole bot: a check finishing while Telegram is unreachable, `gwbot run` killed
with SIGKILL and restarted, the dead man's switch against a local HTTP server, `gwbot outbox`."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import aiosqlite
from aiohttp import web

from bot.config import SelfcheckConfig
from bot.lab.chat import lab_chat
from bot.lab.telegram_standin import BotApiStandIn, User
from bot.lab.telegram_standin.faults import FaultKind
from bot.selfcheck import ping_forever
from bot.services import Services
from storage import HoldReason, OutMessage, OutStatus, Repository
from tests.test_chat import chat_config
from tests.test_cli import config_file, gwbot
from tests.test_outbox import FAST, KAI, SQUAD, SUPER, rig, until
from tests.test_run import TOKEN as RUN_TOKEN
from tests.test_run import config as run_config
from tests.test_run import start as start_run


@asynccontextmanager
async def whole_bot(tmp_path) -> AsyncIterator[tuple[BotApiStandIn, Services]]:
    """The chat bot (real PTB) against the stand-in and a simulated Gateway, outbox settings FAST."""
    async with lab_chat(replace(chat_config(tmp_path), outbox=FAST), [User(KAI, "Kai", "kai")], {SQUAD: "squad"},
                        client_options={"probe_interval": 0.05}) as lab:
        yield lab.standin, lab.services


async def test_a_soak_finishing_while_telegram_is_unreachable_posts_its_results_in_order_when_back(tmp_path):
    async with whole_bot(tmp_path) as (standin, services):
        standin.send_text(SQUAD, KAI, "/soak 0.05")
        await standin.wait_for(lambda m: "started by" in m.text, SQUAD)
        await standin.refuse_connections()

        async def results_stored() -> bool:
            return await services.repo.outbox.count(SQUAD) >= 3
        await until(results_stored, 15)
        await asyncio.sleep(0.5)
        before = len(standin.messages(SQUAD))
        await standin.accept_connections()
        rows = await services.repo.outbox.pending(SQUAD)
        await services.outbox.delivered([r.id for r in rows], 15)
        sent = [await services.repo.outbox.get(r.id) for r in rows]
    got = [standin.message(SQUAD, row.telegram_id) for row in sent]
    assert [m.kind for m in got] == ["text", "text", "photo"]
    assert "soak" in got[0].text and got[1].text.startswith("Results") and got[1].entities, "the report, formatted"
    assert [m.message_id for m in got] == sorted(m.message_id for m in got), "in order"
    assert len(standin.messages(SQUAD)) == before + 3, "each once"


async def test_telegram_unreachable_while_polling_is_one_warning_line_not_a_traceback(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    async with whole_bot(tmp_path) as (standin, _):
        await standin.refuse_connections()

        async def polling_failed() -> bool:
            return any("polling" in r.getMessage() for r in caplog.records if r.name == "bot.app")
        await until(polling_failed, 15)
        await standin.accept_connections()
    assert not [r for r in caplog.records if r.exc_info and r.name.startswith("telegram")], \
        "PTB's default logs a traceback per failed poll; the console shows ERROR lines"


async def test_after_the_squad_group_became_a_supergroup_results_and_the_allow_list_follow_it(tmp_path):
    async with whole_bot(tmp_path) as (standin, _):
        standin.group(SUPER, "squad")
        standin.faults.add(FaultKind.MIGRATE, chat_id=SQUAD, times=None, to_chat_id=SUPER)
        standin.send_text(SQUAD, KAI, "/connect")
        await standin.wait_for(lambda m: m.text.startswith("Results") and bool(m.entities), SUPER)
        standin.send_text(SUPER, KAI, "/help")  # the config still lists only the old id
        await standin.wait_for(lambda m: "/checklist" in m.text, SUPER)
    assert not any("only answers its squad" in m.text for m in standin.messages(SUPER))


async def _statuses(db_path, chat_id: int) -> list[str]:
    async with aiosqlite.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        rows = await db.execute_fetchall("SELECT status FROM outbox WHERE chat_id = ? ORDER BY id", (chat_id,))
    return [r[0] for r in rows]


async def test_gwbot_run_killed_with_messages_pending_sends_them_after_restart_and_nothing_twice(tmp_path):
    db_path = tmp_path / "data" / "gwbot.sqlite3"
    async with await Repository.open(db_path) as repo:
        await repo.outbox.enqueue_many([(KAI, OutMessage.plain(f"kai {i}")) for i in range(3)])
        await repo.outbox.enqueue_many([(SQUAD, OutMessage.plain(f"squad {i}")) for i in range(3)])
    async with BotApiStandIn(token=RUN_TOKEN) as standin:
        standin.user(KAI, "Kai", "kai")
        standin.group(SQUAD, "squad")
        cfg = run_config(tmp_path, standin.base_url)
        cfg.write_text(cfg.read_text() + "outbox: {retry_initial: 0.1, retry_max: 0.5, chat_interval: 0}\n")
        # The squad's first message is taken and never answered: the kill lands while it is in flight.
        standin.faults.add(FaultKind.HOLD, chat_id=SQUAD, times=None, seconds=60)
        proc = await start_run(cfg, standin.token)
        try:
            async def kai_marked() -> bool:
                return await _statuses(db_path, KAI) == ["sent"] * 3 and any(
                    c.method == "sendMessage" and str(c.params.get("chat_id")) == str(SQUAD) for c in standin.calls)
            await until(kai_marked, 20)
            proc.kill()  # SIGKILL: no clean-up at all
            await proc.wait()
            assert proc.returncode == -signal.SIGKILL
            assert await _statuses(db_path, SQUAD) == ["pending"] * 3
            standin.faults.clear()
            proc = await start_run(cfg, standin.token)

            async def squad_done() -> bool:
                return await _statuses(db_path, SQUAD) == ["sent"] * 3
            await until(squad_done, 20)
            await asyncio.sleep(0.5)  # time for a wrong resend to show up
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(proc.communicate(), 20)
    assert [m.text for m in standin.messages(KAI)] == ["kai 0", "kai 1", "kai 2"]
    assert [m.text for m in standin.messages(SQUAD)] == ["squad 0", "squad 1", "squad 2"]


async def test_dead_mans_switch_pings_while_healthy_and_stops_while_the_outbox_is_stuck(tmp_path):
    hits: list[float] = []

    async def ping(_: web.Request) -> web.Response:
        hits.append(time.monotonic())
        return web.Response(text="OK")

    app = web.Application()
    app.router.add_get("/ping/abc", ping)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/ping/abc"
    try:
        async with rig(tmp_path) as r:
            task = asyncio.create_task(ping_forever(SelfcheckConfig(ping_url=url, every=1), r.outbox))
            try:
                await until(lambda: asyncio.sleep(0, len(hits) >= 2), 5)
                await r.standin.refuse_connections()
                ids = await r.send(KAI, "waiting")
                await asyncio.sleep(2.2)  # the message has now waited longer than `every`
                stuck = len(hits)
                await asyncio.sleep(2.2)
                assert len(hits) == stuck, "no ping while a message is stuck"
                await r.standin.accept_connections()
                await r.outbox.delivered(ids, 5)
                await until(lambda: asyncio.sleep(0, len(hits) > stuck), 5)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    finally:
        await runner.cleanup()


async def test_gwbot_outbox_lists_pending_and_held_chats_and_retry_releases(tmp_path):
    cfg = str(config_file(tmp_path))
    async with await Repository.open(tmp_path / "data" / "gwbot.sqlite3") as repo:
        [first, _] = await repo.outbox.enqueue_many([(SQUAD, OutMessage.plain("a")), (SQUAD, OutMessage.plain("b"))])
        await repo.outbox.reschedule(first, time.time() + 30, 3, "sendMessage: NetworkError: connection refused")
        await repo.outbox.enqueue_many([(KAI, OutMessage.plain("c"))])
        await repo.outbox.hold(KAI, HoldReason.BLOCKED, "sendMessage: Forbidden: bot was blocked by the user")
    code, out, err = await gwbot("--config", cfg, "outbox")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("chat -100: 2 pending since ") and "last error: sendMessage: NetworkError" in lines[0]
    assert lines[1].startswith("chat 42: 1 pending since ") and "HELD since" in lines[1] and "blocked" in lines[1]
    code, out, _ = await gwbot("--config", cfg, "history")
    assert "Not sending to chat 42" in out and "1 messages kept" in out and "gwbot outbox --retry" in out
    code, out, _ = await gwbot("--config", cfg, "outbox", "--retry")
    assert code == 0 and "Released 1 held chats; 3 messages are due now" in out
    async with await Repository.open(tmp_path / "data" / "gwbot.sqlite3") as repo:
        assert await repo.outbox.holds() == []
        assert all(b.next_attempt_at == 0 for b in await repo.outbox.backlog())


async def test_gwbot_outbox_says_plainly_what_could_not_be_delivered(tmp_path):
    cfg = str(config_file(tmp_path))
    code, out, err = await gwbot("--config", cfg, "outbox")
    assert (code, out) == (0, "Outbox empty: nothing stored yet.\n"), err
    async with await Repository.open(tmp_path / "data" / "gwbot.sqlite3") as repo:
        assert await repo.outbox.backlog() == []
    code, out, err = await gwbot("--config", cfg, "outbox")
    assert (code, out) == (0, "Outbox empty: every message was delivered.\n"), err
    async with await Repository.open(tmp_path / "data" / "gwbot.sqlite3") as repo:
        [sent, dead] = await repo.outbox.enqueue_many([(KAI, OutMessage.plain("hello")),
                                                       (SQUAD, OutMessage.plain("🔴 paper is DOWN\ndetails"))])
        await repo.outbox.update(sent, status=OutStatus.SENT, telegram_id=1)
        await repo.outbox.update(dead, status=OutStatus.FAILED, last_error="sendPhoto to chat -100: Bad thing")
    code, out, err = await gwbot("--config", cfg, "outbox")
    assert code == 0, err
    assert "every message was delivered" not in out
    nothing, header, letter = out.splitlines()
    assert nothing == "Nothing is waiting to be sent."
    assert header.startswith("1 message could not be delivered")
    assert letter.startswith(f"  #{dead} to chat -100, written ") and letter.endswith(
        'UTC: "🔴 paper is DOWN"; Telegram said: sendPhoto to chat -100: Bad thing')
