"""The durable outbox against a misbehaving Bot API stand-in: real python-telegram-bot over HTTP,
a real SQLite file. Each of Telegram's failures, then: everything arrives, in order, none twice."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import pytest
from telegram import Bot

from bot.config import ConfigError, OutboxConfig, load_config
from bot.lab.telegram_standin import BotApiStandIn
from bot.lab.telegram_standin.faults import FaultKind
from bot.outbox import Outbox, RateLimiter, split_text
from handlers.delivery import TelegramTransport
from storage import HoldReason, OutKind, OutMessage, OutStatus, Repository

SQUAD, SUPER, KAI, NOBODY = -100, -1001234567890, 42, 777
FAST = OutboxConfig(digest_after=10, retry_initial=0.05, retry_max=0.3, max_attempts=3, send_timeout=2,
                    chat_interval=0, group_per_minute=1000, overall_per_second=1000)


@dataclass
class Rig:
    standin: BotApiStandIn
    repo: Repository
    outbox: Outbox
    bot: Bot

    async def send(self, chat_id: int, *texts: str) -> list[int]:
        return await self.outbox.enqueue(chat_id, [OutMessage.plain(t) for t in texts])

    def texts(self, chat_id: int) -> list[str]:
        return [m.text for m in self.standin.messages(chat_id)]

    def calls(self, status: int | None = None) -> list[int]:
        return [c.status for c in self.standin.calls if c.method == "sendMessage" and status in (None, c.status)]


@asynccontextmanager
async def rig(tmp_path, config: OutboxConfig = FAST) -> AsyncIterator[Rig]:
    async with BotApiStandIn() as standin:
        standin.user(KAI, "Kai", "kai")
        standin.group(SQUAD, "squad")
        async with await Repository.open(tmp_path / "gwbot.sqlite3") as repo, \
                Bot(standin.token, base_url=standin.base_url) as bot:
            outbox = Outbox(repo.outbox, config)
            await outbox.load()
            await outbox.start(TelegramTransport(bot, config.send_timeout))
            try:
                yield Rig(standin, repo, outbox, bot)
            finally:
                await outbox.stop()


async def until(condition, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.02)


async def test_refused_connections_then_everything_arrives_in_order_once(tmp_path):
    async with rig(tmp_path) as r:
        await r.standin.refuse_connections()
        ids = await r.send(SQUAD, "one", "two", "three")
        ids += await r.send(SQUAD, "four", "five")
        await asyncio.sleep(1.0)
        row = await r.repo.outbox.get(ids[0])
        assert row.status == OutStatus.PENDING and row.attempts >= 2 and "NetworkError" in row.last_error
        assert r.texts(SQUAD) == []
        await r.standin.accept_connections()
        await r.outbox.delivered(ids, 10)
        assert r.texts(SQUAD) == ["one", "two", "three", "four", "five"]
        assert r.calls(200) == [200] * 5


async def test_server_errors_are_retried(tmp_path):
    async with rig(tmp_path) as r:
        r.standin.faults.add(FaultKind.SERVER_ERROR, times=3)
        ids = await r.send(SQUAD, "a", "b", "c")
        await r.outbox.delivered(ids, 10)
        assert r.texts(SQUAD) == ["a", "b", "c"]
        assert r.calls() == [500, 500, 500, 200, 200, 200]


async def test_a_request_never_answered_times_out_and_is_sent_again_once(tmp_path):
    async with rig(tmp_path, replace(FAST, send_timeout=0.5)) as r:
        r.standin.faults.add(FaultKind.HOLD, seconds=3)
        ids = await r.send(KAI, "held", "next")
        await r.outbox.delivered(ids, 10)
        assert r.texts(KAI) == ["held", "next"]
        row = await r.repo.outbox.get(ids[0])
        assert (row.status, row.attempts) == (OutStatus.SENT, 1)
        assert [s for s in r.calls() if s != 499] == [200, 200], "the held request was never done"


async def test_retry_after_holds_back_that_chat_only(tmp_path):
    async with rig(tmp_path) as r:
        r.standin.faults.add(FaultKind.RETRY_AFTER, chat_id=SQUAD, seconds=1)
        start = time.monotonic()
        squad = await r.send(SQUAD, "squad 1", "squad 2")
        kai = await r.send(KAI, "kai 1")
        await r.outbox.delivered(kai, 5)
        assert r.texts(SQUAD) == [], "the squad's chat waits out its retry_after"
        await r.outbox.delivered(squad, 5)
        assert time.monotonic() - start >= 0.95
        assert r.texts(SQUAD) == ["squad 1", "squad 2"]


async def test_blocked_chat_is_held_with_its_messages_and_released_by_retry(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "bot.outbox")
    async with rig(tmp_path) as r:
        r.standin.faults.add(FaultKind.FORBIDDEN, chat_id=KAI, times=None)
        kai = await r.send(KAI, "k1", "k2")
        squad = await r.send(SQUAD, "s1")
        await r.outbox.delivered(squad, 5)

        async def held() -> bool:
            return any("stopped sending to chat 42" in m for m in caplog.messages)
        await until(held)
        [hold] = await r.repo.outbox.holds()
        assert (hold.chat_id, hold.reason, hold.pending) == (KAI, HoldReason.BLOCKED, 2)
        assert "blocked by the user" in hold.detail
        assert any("stopped sending to chat 42" in m and "2 messages kept" in m for m in caplog.messages)
        await asyncio.sleep(0.5)
        assert len(r.calls(403)) == 1, "no hammering of a chat that blocked the bot"
        r.standin.faults.clear()
        assert await r.repo.outbox.retry_now() == 2
        await r.outbox.delivered(kai, 10)
        assert r.texts(KAI) == ["k1", "k2"]


async def test_chat_not_found_is_held(tmp_path):
    async with rig(tmp_path) as r:
        await r.send(NOBODY, "hello?")

        async def held() -> bool:
            return bool(await r.repo.outbox.holds())
        await until(held)
        [hold] = await r.repo.outbox.holds()
        assert hold.reason is HoldReason.NOT_FOUND and hold.pending == 1


async def test_a_group_that_became_a_supergroup_is_followed(tmp_path):
    async with rig(tmp_path) as r:
        r.standin.group(SUPER, "squad")
        r.standin.faults.add(FaultKind.MIGRATE, chat_id=SQUAD, times=None, to_chat_id=SUPER)
        ids = await r.send(SQUAD, "m1", "m2")
        await r.outbox.delivered(ids, 10)
        assert r.texts(SUPER) == ["m1", "m2"] and r.texts(SQUAD) == []
        assert SUPER in r.outbox.followed({SQUAD}), "the allow-list accepts the supergroup"
        ids = await r.send(SQUAD, "m3")  # a job that captured the old id
        await r.outbox.delivered(ids, 10)
        assert r.texts(SUPER) == ["m1", "m2", "m3"]
        assert len(r.calls(400)) == 1
        again = Outbox(r.repo.outbox, FAST)
        await again.load()
        assert again.resolve(SQUAD) == SUPER, "remembered across restarts"


async def test_too_long_is_sent_in_parts_in_order(tmp_path):
    text = "\n".join(f"line {i:04d} " + "x" * 80 for i in range(100))  # about 9000 characters
    async with rig(tmp_path) as r:
        ids = await r.send(KAI, "before", text, "after")
        await r.outbox.delivered(ids, 10)
        got = r.texts(KAI)
        assert got[0] == "before" and got[-1] == "after" and len(got) == 5
        assert [t[:6] for t in got[1:4]] == ["(1/3) ", "(2/3) ", "(3/3) "]
        assert "\n".join(t[6:] for t in got[1:4]) == text


async def test_too_long_for_five_parts_goes_as_a_file_and_a_refused_short_text_as_one_part(tmp_path):
    huge = "\n".join(f"row {i} " + "y" * 90 for i in range(400))  # about 38000 characters
    async with rig(tmp_path) as r:
        r.standin.faults.add(FaultKind.TOO_LONG, chat_id=SQUAD)
        ids = await r.send(KAI, huge)
        ids += await r.send(SQUAD, "short")
        await r.outbox.delivered(ids, 10)
        [doc] = r.standin.messages(KAI)
        assert doc.kind == "document" and doc.file_name == "message.txt" and doc.file_bytes == huge.encode()
        assert r.texts(SQUAD) == ["(1/1) short"]


async def test_a_too_long_caption_is_shortened(tmp_path):
    async with rig(tmp_path) as r:
        ids = await r.outbox.enqueue(KAI, [OutMessage.document(b"data", "x.txt", "c" * 2000)])
        await r.outbox.delivered(ids, 10)
        [doc] = r.standin.messages(KAI)
        assert doc.file_name == "x.txt" and len(doc.text) == 1024


async def test_an_unexpected_answer_is_logged_retried_a_few_times_then_dead_lettered(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "bot.outbox")
    async with rig(tmp_path) as r:
        bad = await r.outbox.enqueue(KAI, [OutMessage.photo(b"not an image", "chart")])
        good = await r.send(KAI, "still delivered")
        await r.outbox.delivered(bad + good, 10)
        row = await r.repo.outbox.get(bad[0])
        assert row.status == OutStatus.FAILED and "image_process_failed" in row.last_error.lower()
        assert r.texts(KAI) == ["still delivered"]
        photos = [c for c in r.standin.calls if c.method == "sendPhoto"]
        assert len(photos) == FAST.max_attempts
        assert any("sendPhoto to chat 42" in m for m in caplog.messages), caplog.messages


async def test_a_backlog_after_an_outage_becomes_one_digest(tmp_path):
    async with rig(tmp_path) as r:
        await r.standin.refuse_connections()
        ids = []
        for i in range(FAST.digest_after + 4):
            ids += await r.send(SQUAD, f"alert {i}\nsecond line")
        await asyncio.sleep(0.5)
        await r.standin.accept_connections()
        await r.outbox.delivered(ids, 10)
        await asyncio.sleep(0.3)
        [digest] = r.texts(SQUAD)  # the whole backlog in one, the oldest included
        assert digest.startswith("📬 14 messages piled up for this chat since")
        assert all(f"alert {i}" in digest for i in range(FAST.digest_after + 4))
        statuses = [(await r.repo.outbox.get(i)).status for i in ids]
        assert statuses[0] == OutStatus.SENT and set(statuses[1:]) == {OutStatus.DIGESTED}


async def test_a_burst_while_telegram_is_reachable_becomes_one_digest_too(tmp_path):
    async with rig(tmp_path) as r:
        await r.outbox.delivered(await r.send(SQUAD, "before"), 10)  # the chat's sender is running
        ids = await r.send(SQUAD, *[f"alert {i}" for i in range(FAST.digest_after + 4)])  # 50 Gateways down at once
        await r.outbox.delivered(ids, 10)
        before, digest = r.texts(SQUAD)
        assert before == "before"
        assert digest.startswith("📬 14 messages piled up for this chat since")


async def test_a_small_backlog_is_sent_as_it_is(tmp_path):
    async with rig(tmp_path) as r:
        await r.standin.refuse_connections()
        ids = await r.send(SQUAD, *[f"m{i}" for i in range(FAST.digest_after)])
        await asyncio.sleep(0.3)
        await r.standin.accept_connections()
        await r.outbox.delivered(ids, 10)
        assert r.texts(SQUAD) == [f"m{i}" for i in range(FAST.digest_after)]


async def test_messages_to_one_chat_are_spaced(tmp_path):
    async with rig(tmp_path, replace(FAST, chat_interval=0.2)) as r:
        ids = await r.send(KAI, "1", "2", "3", "4")
        await r.outbox.delivered(ids, 10)
        sent = [m.sent_at for m in r.standin.messages(KAI)]
        assert min(b - a for a, b in itertools.pairwise(sent)) >= 0.2, "as Telegram sees them arrive"


def test_the_chat_gap_counts_from_telegrams_answer_not_from_the_request():
    """Telegram sees a message when it arrives: a slow request followed by a fast one must not arrive
    closer together than the gap (CI once saw 0.17 s for a 0.2 s gap)."""
    limiter = RateLimiter(chat_interval=0.2, group_per_minute=20, overall_per_second=30)

    async def two_sends() -> float:
        await limiter.acquire(KAI)
        await asyncio.sleep(0.1)  # the first request is still on its way
        answered = time.monotonic()
        limiter.answered(KAI)
        await limiter.acquire(KAI)
        return time.monotonic() - answered
    assert asyncio.run(two_sends()) >= 0.2


def test_rate_limiter_keeps_the_group_and_overall_limits():
    limiter = RateLimiter(chat_interval=0, group_per_minute=3, overall_per_second=5)

    async def burst(chat_id: int, n: int) -> None:
        for _ in range(n):
            await limiter.acquire(chat_id)
    asyncio.run(burst(SQUAD, 3))
    now = time.monotonic()
    assert limiter.delay(SQUAD, now) > 55, "the 4th message to a group within a minute waits"
    assert limiter.delay(KAI, now) == 0, "a private chat is not a group"
    asyncio.run(burst(KAI, 2))
    assert limiter.delay(KAI, time.monotonic()) > 0.5, "5 per second in all"


@pytest.mark.parametrize("limit", [50, 4000])
def test_split_text_keeps_every_character_within_the_limit(limit):
    text = "\n".join(f"{i} " + "é🙂" * (i % 37) for i in range(400)) + "\n" + "z" * 9000
    parts = split_text(text, limit)
    assert all(len(p.encode("utf-16-le")) // 2 <= limit for p in parts)
    assert "".join(parts).replace("\n", "") == text.replace("\n", "")


@pytest.mark.parametrize(("text", "error"), [
    ("selfcheck: {ping_url: hc-ping.com/abc}",
     "selfcheck.ping_url: expected an http:// or https:// URL, like https://hc-ping.com/UUID (no spaces), or null"),
    ("selfcheck: {every: 0}", "selfcheck.every: expected a number of seconds from 1 to 86400"),
    ("outbox: {digest_after: 0}", "outbox.digest_after: expected an integer 1-10000"),
    ("outbox: {retry_max: -1}", "outbox.retry_max: expected a number of seconds > 0, at most 3600"),
])
def test_outbox_and_selfcheck_settings_are_checked(tmp_path, text, error):
    path = tmp_path / "config.yaml"
    path.write_text(text + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    assert str(e.value).startswith(f"config.yaml: {error}, got ")


def test_outbox_and_selfcheck_settings_load(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("outbox: {digest_after: 3, chat_interval: 0.5}\n"
                    "selfcheck: {ping_url: 'https://hc-ping.com/abc', every: 30}\n", encoding="utf-8")
    config = load_config(path, env={})
    assert (config.outbox.digest_after, config.outbox.chat_interval) == (3, 0.5)
    assert (config.selfcheck.ping_url, config.selfcheck.every) == ("https://hc-ping.com/abc", 30.0)


def test_sends_that_never_reached_telegram_do_not_use_up_a_groups_minute():
    limiter = RateLimiter(chat_interval=0, group_per_minute=3, overall_per_second=100)

    async def attempts() -> None:
        for _ in range(5):
            limiter.refund(SQUAD, await limiter.acquire(SQUAD))
    asyncio.run(attempts())
    assert limiter.delay(SQUAD, time.monotonic()) == 0


async def test_an_idle_outbox_starts_no_tasks(tmp_path):
    """The error matrix counts the tasks a row leaves behind: idle senders must not make new ones
    (asyncio.wait_for on 3.11 wraps every wait in a task)."""
    async with rig(tmp_path) as r:
        await r.outbox.delivered(await r.send(KAI, "hello"), 5)
        before = asyncio.all_tasks()
        await asyncio.sleep(2.5)  # longer than a sender's and the scanner's wait
        assert {t.get_name() for t in asyncio.all_tasks() - before} == set()


def alert(gateway: str, text: str, *, edit: bool = False) -> OutMessage:
    """A watch alert as the outbox stores it: keyed by its Gateway's outage, with its buttons."""
    buttons = () if edit else (("Acknowledge", f"ack:{gateway}@1"), ("Mute 1h", f"mute1h:{gateway}@1"))
    return OutMessage(OutKind.TEXT, text, buttons=buttons, key=f"down:{gateway}@1", edit=edit)


async def test_a_digest_has_no_buttons_and_a_later_edit_never_lands_on_it(tmp_path):
    burst = [alert(f"gw{i}", f"🔴 gw{i} is DOWN") for i in range(FAST.digest_after + 2)]
    async with rig(tmp_path) as r:
        await r.outbox.delivered(await r.send(SQUAD, "before"), 10)
        ids = await r.outbox.enqueue(SQUAD, burst)  # 12 Gateways down at once
        await r.outbox.delivered(ids, 10)
        [_, digest] = r.standin.messages(SQUAD)
        assert digest.text.startswith("📬 12 messages piled up") and digest.buttons == ()
        taken = await r.outbox.enqueue(SQUAD, [alert("gw0", "🔴 gw0 is DOWN — taken by kai", edit=True)])
        await r.outbox.delivered(taken, 10)
        assert [m.text for m in r.standin.messages(SQUAD)] == ["before", digest.text, "🔴 gw0 is DOWN — taken by kai"]
        assert r.standin.message(SQUAD, digest.message_id).edits == 0, "the digest is nobody's alert"
        again = await r.outbox.enqueue(SQUAD, [alert("gw0", "🔴 gw0 is DOWN — taken by kai; 5 min", edit=True)])
        await r.outbox.delivered(again, 10)
        assert [m.text for m in r.standin.messages(SQUAD)][2:] == ["🔴 gw0 is DOWN — taken by kai; 5 min"], \
            "the edit that went out new is gw0's message now: the next edit changes it"


async def test_an_edit_is_never_folded_into_a_digest_nor_a_digest_sent_as_an_edit(tmp_path):
    async with rig(tmp_path) as r:
        await r.outbox.delivered(await r.outbox.enqueue(SQUAD, [alert("paper", "🔴 paper is DOWN")]), 10)
        [paper] = r.standin.messages(SQUAD)
        burst = [alert(f"gw{i}", f"🔴 gw{i} is DOWN") for i in range(FAST.digest_after + 2)]
        ids = await r.outbox.enqueue(SQUAD, [OutMessage.plain("before"),
                                             alert("paper", "🔴 paper is DOWN — taken by kai", edit=True), *burst])
        await r.outbox.delivered(ids, 10)
        assert r.standin.message(SQUAD, paper.message_id).text == "🔴 paper is DOWN — taken by kai"
        digest = r.standin.messages(SQUAD)[-1]
        assert digest.text.startswith("📬 13 messages piled up") and digest.buttons == () and digest.edits == 0
        assert "before" in digest.text and "taken by kai" not in digest.text
        assert len(r.standin.messages(SQUAD)) == 2


async def test_an_alert_whose_buttons_telegram_refuses_goes_at_once_without_them(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "bot.outbox")
    name = "g" * 60  # callback data over Telegram's 64 bytes: 400 BUTTON_DATA_INVALID
    async with rig(tmp_path) as r:
        ids = await r.outbox.enqueue(KAI, [alert(name, f"🔴 {name} is DOWN"), OutMessage.plain("next")])
        await r.outbox.delivered(ids, 10)
        [down, after] = r.standin.messages(KAI)
        assert (down.text, down.buttons, after.text) == (f"🔴 {name} is DOWN", (), "next")
        assert r.calls() == [400, 200, 200], "refused once, not retried into a dead letter"
        assert (await r.repo.outbox.get(ids[0])).status == OutStatus.SENT
        assert any(f"buttons of message {ids[0]}" in m and "button_data_invalid" in m.lower()
                   for m in caplog.messages)


async def test_an_edit_of_a_message_that_is_gone_is_sent_as_a_new_one(tmp_path):
    async with rig(tmp_path) as r:
        await r.outbox.stop()  # the row below is written as sent: no sender may take it meanwhile
        [gone] = await r.repo.outbox.enqueue_many([(KAI, alert("paper", "🔴 paper is DOWN"))])
        await r.repo.outbox.update(gone, status=OutStatus.SENT, telegram_id=999)  # deleted in the chat since
        await r.outbox.start(TelegramTransport(r.bot, FAST.send_timeout))
        ids = await r.outbox.enqueue(KAI, [alert("paper", "🔴 paper is DOWN — taken by kai", edit=True)])
        await r.outbox.delivered(ids, 10)
        assert [m.text for m in r.standin.messages(KAI)] == ["🔴 paper is DOWN — taken by kai"]
        edits = [c.status for c in r.standin.calls if c.method == "editMessageText"]
        assert edits == [400] and (await r.repo.outbox.get(ids[0])).status == OutStatus.SENT


async def test_an_edit_telegram_already_has_counts_as_sent(tmp_path):
    """A retried edit whose first try landed (its answer lost) is answered "message is not modified"."""
    async with rig(tmp_path) as r:
        down = alert("paper", "🔴 paper is DOWN")
        ids = await r.outbox.enqueue(KAI, [down, replace(down, edit=True)])
        await r.outbox.delivered(ids, 10)
        assert [c.status for c in r.standin.calls if c.method == "editMessageText"] == [400]
        assert (await r.repo.outbox.get(ids[1])).status == OutStatus.SENT


async def test_a_stop_lets_a_request_telegram_already_took_finish_so_a_restart_does_not_send_it_twice(tmp_path):
    async with rig(tmp_path) as r:
        r.standin.faults.add(FaultKind.LATE, seconds=1.0)  # shown at once, answered a second later
        [row_id] = await r.send(SQUAD, "🔴 paper is DOWN")
        await until(lambda: asyncio.sleep(0, r.texts(SQUAD) == ["🔴 paper is DOWN"]))
        await r.outbox.stop()  # gwbot stopping (SIGTERM) while the answer is on its way
        assert (await r.repo.outbox.get(row_id)).status == OutStatus.SENT
        await r.outbox.start(TelegramTransport(r.bot, FAST.send_timeout))
        await r.outbox.delivered(await r.send(SQUAD, "next"), 10)
        assert r.texts(SQUAD) == ["🔴 paper is DOWN", "next"]


async def test_a_digest_still_waiting_when_more_pile_up_is_unpacked_into_the_next_one(tmp_path):
    async with rig(tmp_path) as r:
        await r.standin.refuse_connections()
        ids = await r.send(SQUAD, *[f"alert {i}" for i in range(FAST.digest_after + 1)])
        await until(lambda: _digested(r, ids[1]))
        ids += await r.send(SQUAD, *[f"later {i}" for i in range(FAST.digest_after + 1)])
        await r.standin.accept_connections()
        await r.outbox.delivered(ids, 10)
        [digest] = r.texts(SQUAD)
        assert digest.startswith(f"📬 {2 * (FAST.digest_after + 1)} messages piled up")
        assert all(f"alert {i}" in digest and f"later {i}" in digest for i in range(FAST.digest_after + 1))


async def _digested(r: Rig, row_id: int) -> bool:
    row = await r.repo.outbox.get(row_id)
    return row is not None and row.status == OutStatus.DIGESTED
