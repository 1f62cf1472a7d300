"""Chats that asked for the watch's alerts with /subscribe (besides ``watch.alert_chat_ids``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiosqlite


class SubscriberStore:
    """On the repository's connection (one writer): every write is one transaction of the
    repository's (``committed``), never a commit in the middle of another task's."""

    def __init__(self, db: aiosqlite.Connection,
                 committed: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]) -> None:
        self._db = db
        self._write = committed

    async def add(self, chat_id: int, by: str) -> bool:
        """False: the chat was subscribed already."""
        cur = await self._write(lambda: self._db.execute(
            "INSERT OR IGNORE INTO watch_subscribers (chat_id, by, since) VALUES (?, ?, ?)",
            (chat_id, by, datetime.now(UTC).isoformat())))
        return bool(cur.rowcount == 1)

    async def remove(self, chat_id: int) -> bool:
        """False: the chat was not subscribed."""
        cur = await self._write(lambda: self._db.execute("DELETE FROM watch_subscribers WHERE chat_id = ?", (chat_id,)))
        return bool(cur.rowcount == 1)

    async def chat_ids(self) -> list[int]:
        rows = await self._db.execute_fetchall("SELECT chat_id FROM watch_subscribers ORDER BY chat_id")
        return [r["chat_id"] for r in rows]
