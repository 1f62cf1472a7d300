"""The per-person update processor, driven through PTB's own process_update (its concurrency slots
included) with real Update objects: one person's queue never takes the slots everyone else needs."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime

from telegram import Chat, Message, Update, User

from bot.app import PerPersonUpdateProcessor

SQUAD = Chat(-100, Chat.GROUP)
_ids = itertools.count(1)


def said_by(user_id: int) -> Update:
    n = next(_ids)
    return Update(n, message=Message(n, datetime.now(UTC), SQUAD, from_user=User(user_id, "P", False), text="/x"))


async def test_a_person_waiting_for_their_turn_holds_no_slot():
    processor = PerPersonUpdateProcessor(max_concurrent=2)
    release = asyncio.Event()
    # One person's slow command runs; two more of theirs wait for it, in order.
    slow = [asyncio.create_task(processor.process_update(said_by(1), release.wait())) for _ in range(3)]
    await asyncio.sleep(0)
    other = asyncio.create_task(processor.process_update(said_by(2), asyncio.sleep(0)))
    await asyncio.wait_for(other, 1)  # one free slot: the other person's command runs now
    release.set()
    await asyncio.wait_for(asyncio.gather(*slow), 1)


async def test_at_most_max_concurrent_updates_run_at_once_and_each_persons_in_order():
    processor = PerPersonUpdateProcessor(max_concurrent=2)
    running, most, order = 0, 0, []

    async def work(person: int, n: int) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        order.append((person, n))
        for _ in range(3):
            await asyncio.sleep(0)
        running -= 1

    await asyncio.wait_for(asyncio.gather(*(processor.process_update(said_by(p), work(p, n))
                                            for n in range(4) for p in (1, 2, 3))), 2)
    assert most == 2
    for person in (1, 2, 3):
        assert [n for p, n in order if p == person] == [0, 1, 2, 3]
