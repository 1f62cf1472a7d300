"""Asyncio hygiene: bounded queues, a refusal memory that forgets, cancellation that is not swallowed."""

from __future__ import annotations

import asyncio

import pytest
from telegram import Bot

from bot.checks.base import Progress
from bot.ibkr.events import EventBus, Heartbeat
from bot.journal import RunJournal
from bot.lab.telegram_standin import BotApiStandIn
from bot.queues import DropOldestQueue
from handlers.access import REFUSAL_QUIET, AccessGate
from handlers.progress import ProgressMessage


def test_a_full_queue_drops_its_oldest_item_and_counts_it(caplog):
    queue: DropOldestQueue[int] = DropOldestQueue(3, "test")
    for n in range(5):
        queue.put_nowait(n)
    assert queue.qsize() == 3 and queue.dropped == 2
    assert [queue.get_nowait() for _ in range(3)] == [2, 3, 4]
    assert any("dropped the oldest" in r.getMessage() for r in caplog.records)


async def test_event_streams_journals_and_stand_in_subscribers_are_bounded(tmp_path):
    bus = EventBus()
    async with bus.stream() as queue:
        for _ in range(queue.maxsize + 10):
            bus.emit(Heartbeat(rtt=1.0))
        assert 0 < queue.qsize() == queue.maxsize
    assert RunJournal(None, 1)._queue.maxsize > 0  # type: ignore[arg-type]
    async with BotApiStandIn() as standin:
        assert standin.subscribe().maxsize > 0


def test_the_access_gate_forgets_refusals_older_than_its_quiet_time():
    gate = AccessGate()
    for user in range(100):
        assert gate.first_refusal(-1, user, now=float(user))
    assert not gate.first_refusal(-1, 99, now=100.0), "refused a moment ago: quiet"
    assert gate.first_refusal(-1, 200, now=100.0 + REFUSAL_QUIET + 1)
    assert len(gate._refused) == 1, "only the refusal still inside its quiet time is kept"


async def test_cancelling_a_progress_close_cancels_the_caller_too():
    async with BotApiStandIn() as standin, Bot(standin.token, base_url=standin.base_url) as bot:
        standin.user(1, "Kai", "kai")
        progress = ProgressMessage(bot, 1, "soak", 7, interval=60)
        progress(Progress("soak", "running", 1.0))
        await standin.wait_for(lambda m: "soak" in m.text, 1)
        progress(Progress("soak", "running", 2.0))  # held back by the interval: the worker waits
        closing = asyncio.create_task(progress.close())
        await asyncio.sleep(0)  # close() now awaits the cancelled worker
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        assert closing.cancelled(), "the caller's own cancellation reached it"
