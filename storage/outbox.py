"""The outbox's rows: every message that must arrive is written here before it is sent.

A row is ``pending`` until Telegram accepted it (``sent``), it was folded into a digest
(``digested``), or it failed for good (``failed``, the dead letters). Its schedule
(``next_attempt_at``, ``attempts``, ``last_error``) lives here too, so a restart or
``gwbot outbox --retry`` in another process sees and changes the same plan.
Chats Telegram refused are held (their messages kept); groups that became supergroups are followed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import aiosqlite

from storage.models import Store, now


class OutKind(StrEnum):
    TEXT = "text"
    HTML = "html"  # Telegram HTML (a formatted report): never split, a file when too long
    DOCUMENT = "document"
    PHOTO = "photo"


class OutStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    DIGESTED = "digested"
    FAILED = "failed"


class HoldReason(StrEnum):
    BLOCKED = "blocked"  # 403: the bot was blocked by the person, or kicked from the group
    NOT_FOUND = "chat not found"


@dataclass(frozen=True)
class OutMessage:
    """What to send: a text, or a file with its caption.

    ``key`` names the message within its chat (an alert's message key); ``edit`` says to edit the
    message sent earlier with that key instead of sending a new one. ``buttons`` are inline
    buttons as (label, callback data) pairs, one row.
    """

    kind: OutKind
    text: str
    file_name: str | None = None
    data: bytes | None = None
    silent: bool = False
    buttons: tuple[tuple[str, str], ...] = ()
    key: str | None = None
    edit: bool = False
    edit_of: int | None = None  # not stored: the Telegram message an edit changes, found at send time

    @classmethod
    def plain(cls, text: str, *, silent: bool = False) -> OutMessage:
        return cls(OutKind.TEXT, text, silent=silent)

    @classmethod
    def html(cls, text: str) -> OutMessage:
        return cls(OutKind.HTML, text)

    @classmethod
    def document(cls, data: bytes, file_name: str, caption: str = "") -> OutMessage:
        return cls(OutKind.DOCUMENT, caption, file_name, data)

    @classmethod
    def photo(cls, data: bytes, caption: str = "", file_name: str = "chart.png") -> OutMessage:
        return cls(OutKind.PHOTO, caption, file_name, data)


@dataclass(frozen=True)
class OutboxRow:
    id: int
    chat_id: int
    message: OutMessage
    status: OutStatus
    created_at: datetime
    next_attempt_at: float  # Unix time
    attempts: int
    last_error: str | None
    split: bool  # send the text in parts (Telegram said it is too long)
    parts_sent: int
    telegram_id: int | None


@dataclass(frozen=True)
class ChatBacklog:
    """One chat's pending messages, for ``gwbot outbox``."""

    chat_id: int
    pending: int
    oldest: datetime
    next_attempt_at: float
    last_error: str | None
    held: HoldReason | None = None
    held_since: datetime | None = None
    held_detail: str = ""


@dataclass(frozen=True)
class Hold:
    chat_id: int
    reason: HoldReason
    detail: str
    since: datetime
    pending: int


def _row(r: aiosqlite.Row) -> OutboxRow:
    buttons = tuple((label, data) for label, data in json.loads(r["buttons"])) if r["buttons"] else ()
    message = OutMessage(OutKind(r["kind"]), r["text"], r["file_name"], r["data"], bool(r["silent"]),
                         buttons, r["message_key"], bool(r["edit"]))
    return OutboxRow(r["id"], r["chat_id"], message, OutStatus(r["status"]), datetime.fromisoformat(r["created_at"]),
                     r["next_attempt_at"], r["attempts"], r["last_error"], bool(r["split"]), r["parts_sent"],
                     r["telegram_id"])


_HELD = "chat_id IN (SELECT chat_id FROM outbox_holds)"


class OutboxStore(Store):
    """The outbox's SQL."""

    # -------------------------------------------------------------- writes
    async def enqueue_many(self, messages: Sequence[tuple[int, OutMessage]]) -> list[int]:
        """(chat, message) pairs, for one chat or several (an alert's fan-out): all or none, one
        statement, one commit. Returns their ids, in send order."""
        if not messages:
            return []
        return await self._committed(lambda: self._insert(messages))

    async def _insert(self, messages: Sequence[tuple[int, OutMessage]]) -> list[int]:
        stamp = now()
        values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(messages))
        params = [p for chat_id, m in messages
                  for p in (chat_id, str(m.kind), m.text, m.file_name, m.data, int(m.silent), stamp,
                            json.dumps(m.buttons) if m.buttons else None, m.key, int(m.edit))]
        rows = await self._db.execute_fetchall(
            "INSERT INTO outbox (chat_id, kind, text, file_name, data, silent, created_at, buttons, "
            f"message_key, edit) VALUES {values} RETURNING id", params)
        return sorted(r["id"] for r in rows)

    async def sent_id(self, chat_id: int, key: str) -> int | None:
        """The Telegram message id an edit under ``key`` changes: the latest message sent new under it.

        The latest, not the first: when the first was gone (deleted in the chat, or folded into a
        digest and never sent itself), an edit went out new and is the one people see now.
        A digest has no key, so it is never an alert's message.
        """
        rows = list(await self._db.execute_fetchall(
            "SELECT telegram_id FROM outbox WHERE chat_id = ? AND message_key = ? AND edit = 0 AND status = 'sent' "
            "AND telegram_id IS NOT NULL ORDER BY id DESC LIMIT 1", (chat_id, key)))
        return int(rows[0]["telegram_id"]) if rows else None

    async def update(self, row_id: int, **columns: object) -> None:
        """Set a row's columns (its status, schedule, parts sent, text)."""
        sets = ", ".join(f"{name} = ?" for name in columns)
        await self._execute(f"UPDATE outbox SET {sets} WHERE id = ?", (*columns.values(), row_id))

    async def reschedule(self, row_id: int, at: float, attempts: int, error: str) -> None:
        await self.update(row_id, next_attempt_at=at, attempts=attempts, last_error=error)

    async def as_file(self, row_id: int, file_name: str, caption: str) -> None:
        """A text too long even in parts goes as a file, in the same place in the queue."""
        await self._execute("UPDATE outbox SET kind = 'document', data = CAST(text AS BLOB), text = ?, file_name = ?, "
                            "split = 0, parts_sent = 0 WHERE id = ?", (caption, file_name, row_id))

    async def digest(self, ids: Sequence[int], text: str) -> list[int]:
        """Fold the chat's pending texts into one message, sent where the first of them stood.

        The digest is a fresh message: it takes the first row's place in the queue (its id) but none
        of its identity (no key, buttons, edit flag or failed attempts), so no later edit can find it
        as an alert's message. A full copy of the first row is kept as digested, so no text is lost.
        ``ids`` are pending texts of one chat, oldest first, none an edit (an edit changes its own
        message); returns the ids now digested (the copy and the rest), or none if any of ``ids`` is
        no longer pending (the caller read before another writer sent or folded it). Files stay queued.
        """
        first, rest = ids[0], list(ids[1:])

        async def fold() -> list[int]:
            marks = ",".join("?" * len(ids))
            still = await self._db.execute_fetchall(
                f"SELECT COUNT(*) AS n FROM outbox WHERE id IN ({marks}) AND status = 'pending'", ids)
            if next(iter(still))["n"] != len(ids):
                return []
            copy = await self._db.execute_fetchall(
                "INSERT INTO outbox (chat_id, kind, text, silent, buttons, message_key, edit, status, created_at, "
                "attempts, last_error) SELECT chat_id, kind, text, silent, buttons, message_key, edit, 'digested', "
                "created_at, attempts, last_error FROM outbox WHERE id = ? RETURNING id", (first,))
            await self._db.execute(f"UPDATE outbox SET status = 'digested' WHERE id IN ({marks[2:]})", rest)
            await self._db.execute(
                "UPDATE outbox SET text = ?, split = 0, parts_sent = 0, silent = 0, buttons = NULL, "
                "message_key = NULL, edit = 0, attempts = 0, last_error = NULL WHERE id = ?", (text, first))
            return [next(iter(copy))["id"], *rest]
        return await self._committed(fold)

    async def hold(self, chat_id: int, reason: HoldReason, detail: str) -> None:
        await self._execute("INSERT OR REPLACE INTO outbox_holds (chat_id, reason, detail, since) VALUES (?, ?, ?, ?)",
                            (chat_id, str(reason), detail, now()))

    async def retry_now(self, chat_id: int | None = None) -> int:
        """Release held chats and make every pending message due now; returns how many are pending."""
        async def release() -> int:
            await self._db.execute("DELETE FROM outbox_holds WHERE ? IS NULL OR chat_id = ?", (chat_id, chat_id))
            cur = await self._db.execute("UPDATE outbox SET next_attempt_at = 0 WHERE status = 'pending' "
                                         "AND (? IS NULL OR chat_id = ?)", (chat_id, chat_id))
            return cur.rowcount
        return await self._committed(release)

    async def move_chat(self, old: int, new: int) -> int:
        """A group became a supergroup: its pending messages go to the new id, and the move is remembered."""
        async def move() -> int:
            await self._db.execute("INSERT OR REPLACE INTO chat_moves (old_chat_id, new_chat_id, at) VALUES (?, ?, ?)",
                                   (old, new, now()))
            await self._db.execute("UPDATE chat_moves SET new_chat_id = ? WHERE new_chat_id = ?", (new, old))
            cur = await self._db.execute("UPDATE outbox SET chat_id = ? WHERE chat_id = ? AND status = 'pending'",
                                         (new, old))
            return cur.rowcount
        return await self._committed(move)

    # --------------------------------------------------------------- reads
    async def _rows(self, where: str, params: Sequence[object] = ()) -> list[OutboxRow]:
        return [_row(r) for r in await self._db.execute_fetchall(f"SELECT * FROM outbox WHERE {where}", params)]

    async def head(self, chat_id: int) -> OutboxRow | None:
        """The chat's next message in send order, unless the chat is held."""
        rows = await self._rows(f"chat_id = ? AND status = 'pending' AND NOT {_HELD} ORDER BY id LIMIT 1", (chat_id,))
        return rows[0] if rows else None

    async def get(self, row_id: int) -> OutboxRow | None:
        rows = await self._rows("id = ?", (row_id,))
        return rows[0] if rows else None

    async def pending(self, chat_id: int) -> list[OutboxRow]:
        return await self._rows("chat_id = ? AND status = 'pending' ORDER BY id", (chat_id,))

    async def count(self, chat_id: int) -> int:
        rows = list(await self._db.execute_fetchall(
            "SELECT COUNT(*) AS n FROM outbox WHERE chat_id = ? AND status = 'pending'", (chat_id,)))
        return int(rows[0]["n"])

    async def sendable_chats(self) -> list[int]:
        rows = await self._db.execute_fetchall(
            f"SELECT DISTINCT chat_id FROM outbox WHERE status = 'pending' AND NOT {_HELD} ORDER BY chat_id")
        return [r["chat_id"] for r in rows]

    async def oldest_sendable(self) -> datetime | None:
        """When the longest-waiting message of a chat that is not held was written."""
        rows = list(await self._db.execute_fetchall(
            f"SELECT MIN(created_at) AS at FROM outbox WHERE status = 'pending' AND NOT {_HELD}"))
        return datetime.fromisoformat(rows[0]["at"]) if rows and rows[0]["at"] else None

    async def backlog(self) -> list[ChatBacklog]:
        rows = await self._db.execute_fetchall(
            "SELECT o.chat_id, COUNT(*) AS n, MIN(o.created_at) AS oldest, MIN(o.next_attempt_at) AS next_at, "
            "(SELECT last_error FROM outbox e WHERE e.chat_id = o.chat_id AND e.status = 'pending' "
            " AND e.last_error IS NOT NULL ORDER BY e.id DESC LIMIT 1) AS err, h.reason, h.since, h.detail "
            "FROM outbox o LEFT JOIN outbox_holds h ON h.chat_id = o.chat_id "
            "WHERE o.status = 'pending' GROUP BY o.chat_id ORDER BY o.chat_id")
        return [ChatBacklog(r["chat_id"], r["n"], datetime.fromisoformat(r["oldest"]), r["next_at"], r["err"],
                            HoldReason(r["reason"]) if r["reason"] else None,
                            datetime.fromisoformat(r["since"]) if r["since"] else None, r["detail"] or "")
                for r in rows]

    async def holds(self) -> list[Hold]:
        rows = await self._db.execute_fetchall(
            "SELECT h.*, (SELECT COUNT(*) FROM outbox o WHERE o.chat_id = h.chat_id AND o.status = 'pending') AS n "
            "FROM outbox_holds h ORDER BY h.since")
        return [Hold(r["chat_id"], HoldReason(r["reason"]), r["detail"], datetime.fromisoformat(r["since"]), r["n"])
                for r in rows]

    async def failed(self, limit: int = 20) -> tuple[int, list[OutboxRow]]:
        """The dead letters: how many there are, and the latest ``limit`` of them."""
        rows = list(await self._db.execute_fetchall("SELECT COUNT(*) AS n FROM outbox WHERE status = 'failed'"))
        return int(rows[0]["n"]), await self._rows("status = 'failed' ORDER BY id DESC LIMIT ?", (limit,))

    async def moves(self) -> dict[int, int]:
        rows = await self._db.execute_fetchall("SELECT old_chat_id, new_chat_id FROM chat_moves")
        return {r["old_chat_id"]: r["new_chat_id"] for r in rows}
