"""Chats that asked for the watch's alerts with /subscribe (besides ``watch.alert_chat_ids``)."""

from __future__ import annotations

from datetime import UTC, datetime

import aiosqlite


class SubscriberStore:
    """On the repository's connection (one writer); every write commits at once."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def add(self, chat_id: int, by: str) -> bool:
        """False: the chat was subscribed already."""
        cur = await self._db.execute("INSERT OR IGNORE INTO watch_subscribers (chat_id, by, since) VALUES (?, ?, ?)",
                                     (chat_id, by, datetime.now(UTC).isoformat()))
        await self._db.commit()
        return cur.rowcount == 1

    async def remove(self, chat_id: int) -> bool:
        """False: the chat was not subscribed."""
        cur = await self._db.execute("DELETE FROM watch_subscribers WHERE chat_id = ?", (chat_id,))
        await self._db.commit()
        return cur.rowcount == 1

    async def chat_ids(self) -> list[int]:
        rows = await self._db.execute_fetchall("SELECT chat_id FROM watch_subscribers ORDER BY chat_id")
        return [r["chat_id"] for r in rows]
