"""The durable outbox: one sender per chat delivers stored messages in order, whatever Telegram does.

No Telegram here: a :class:`Transport` (handlers/delivery.py for PTB) sends one message and says
what happened as an :class:`Outcome`; this module decides what to do about it:

- unreachable (refused, timed out, 5xx): retry with backoff (tenacity's strategy, the schedule
  persisted), forever; a backlog of more than ``digest_after`` texts (after an outage, or a burst of
  alerts) becomes one digest;
- 429: wait ``retry_after`` for that chat only (each chat has its own sender);
- 403 / chat not found: hold the chat, keep its messages, say so in the log (``gwbot outbox --retry`` releases);
- group upgraded to a supergroup: follow it (pending messages and the allow-list's view);
- too long: send the text in parts (or as a file), shorten a caption;
- buttons refused: send the message without them (an alert must not die of its buttons);
- the message an edit changes is gone: send the edit as a new message;
- anything else: a log line naming the method and chat, and a bounded number of retries (then a dead letter).

Telegram's limits are kept before it enforces them by :class:`RateLimiter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol

from tenacity import RetryCallState, wait_exponential_jitter

from bot.config import OutboxConfig
from storage import HoldReason, OutboxRow, OutboxStore, OutKind, OutMessage, OutStatus

log = logging.getLogger(__name__)
PART_LIMIT = 4000  # a part of a split text, with room for the "(2/3)" mark
MAX_PARTS = 5  # a longer text goes as a file: five screens of chat is already a lot
CAPTION_LIMIT = 1024
DIGEST_MARK = "📬 "
STOP_GRACE = 10.0  # seconds a stop waits for requests already on their way to Telegram
RESCAN = 2.0  # seconds: how often senders look at the database for changes made elsewhere (gwbot outbox --retry)


class OutcomeKind(StrEnum):
    SENT = "sent"
    UNREACHABLE = "unreachable"  # connection refused, timeout, HTTP 5xx: try again later
    RETRY_AFTER = "retry after"  # 429
    BLOCKED = "blocked"  # 403
    CHAT_NOT_FOUND = "chat not found"
    MIGRATED = "migrated"  # the group is now a supergroup with another id
    TOO_LONG = "too long"
    BAD_BUTTONS = "buttons refused"  # a 400 about the inline keyboard: the message goes without it
    EDIT_GONE = "nothing to edit"  # the message an edit changes is gone (deleted) or cannot be edited
    FAILED = "failed"  # any other answer


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    detail: str = ""  # for failures: what Telegram (or the network) said, with the method and chat
    message_id: int | None = None
    retry_after: float = 0.0
    new_chat_id: int | None = None


class Transport(Protocol):
    async def send(self, chat_id: int, message: OutMessage) -> Outcome: ...


class RateLimiter:
    """Telegram's limits, kept before it enforces them: a gap between messages to one chat, at most
    ``group_per_minute`` to one group, ``overall_per_second`` in all."""

    def __init__(self, chat_interval: float, group_per_minute: int, overall_per_second: int) -> None:
        self._chat_interval = chat_interval
        self._group_per_minute = group_per_minute
        self._overall_per_second = overall_per_second
        self._last: dict[int, float] = {}
        self._groups: dict[int, deque[float]] = {}
        self._all: deque[float] = deque()

    def delay(self, chat_id: int, now: float) -> float:
        """Seconds to wait before a message to ``chat_id`` may go (0: now)."""
        waits = [self._last.get(chat_id, -1e9) + self._chat_interval - now]
        recent = self._groups.get(chat_id)
        if chat_id < 0 and recent is not None and len(recent) >= self._group_per_minute:
            waits.append(recent[-self._group_per_minute] + 60.0 - now)
        if len(self._all) >= self._overall_per_second:
            waits.append(self._all[-self._overall_per_second] + 1.0 - now)
        return max(0.0, *waits)

    async def acquire(self, chat_id: int) -> float:
        """Wait for a free slot and take it; returns its stamp (for :meth:`refund`)."""
        # Not a busy wait: it sleeps exactly until the next rate-limit slot, re-checked as others may take it.
        while (wait := self.delay(chat_id, time.monotonic())) > 0:  # noqa: ASYNC110
            await asyncio.sleep(wait)
        # No await between the check and the record: another chat's sender cannot slip in between.
        now = time.monotonic()
        self._last[chat_id] = now
        windows = [(self._all, 1.0)] + ([(self._groups.setdefault(chat_id, deque()), 60.0)] if chat_id < 0 else [])
        for stamps, span in windows:
            stamps.append(now)
            while stamps[0] < now - span:
                stamps.popleft()
        return now

    def answered(self, chat_id: int) -> None:
        """Telegram answered a request to ``chat_id``: the chat's gap counts from here.

        Telegram sees a message when it arrives, so a slow request followed by a fast one would
        otherwise arrive closer together than the gap.
        """
        self._last[chat_id] = time.monotonic()

    def refund(self, chat_id: int, stamp: float) -> None:
        """The message never reached Telegram (refused, no answer): it does not count against the limits.

        Without this, retries during an outage fill a group's minute and delay the backlog after it.
        """
        for window in (self._groups.get(chat_id), self._all):
            if window is not None and stamp in window:
                window.remove(stamp)


def split_text(text: str, limit: int = PART_LIMIT) -> list[str]:
    """The text in parts of at most ``limit`` UTF-16 units, cut at line ends where possible."""
    parts: list[str] = []
    current: str | None = None
    for line in text.split("\n"):
        was_cut = False
        while _utf16(line) > limit:  # one huge line: cut it
            head = _cut(line, limit)
            if current is not None:
                parts.append(current)
                current = None
            parts.append(head)
            line, was_cut = line[len(head):], True
        if was_cut and not line:
            continue
        if current is not None and _utf16(current + "\n" + line) > limit:
            parts.append(current)
            current = None
        current = line if current is None else current + "\n" + line
    if current is not None:
        parts.append(current)
    return [p if p.strip() else "." for p in parts]  # Telegram refuses an empty message


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _cut(text: str, limit: int) -> str:
    end = min(len(text), limit)
    while _utf16(text[:end]) > limit:
        end -= 1
    return text[:end]


def _is_digest(message: OutMessage) -> bool:
    return message.kind is OutKind.TEXT and message.key is None and message.text.startswith(DIGEST_MARK)


def first_line(message: OutMessage, width: int = 120) -> str:
    line = (message.text.strip().splitlines() or [""])[0]
    if message.file_name is not None:
        line = f"[{message.file_name}] {line}".strip()
    return line if len(line) <= width else line[:width - 1] + "…"


class Outbox:
    """Enqueue here; :meth:`start` with a Transport sends. Messages wait in SQLite until then."""

    def __init__(self, store: OutboxStore, config: OutboxConfig) -> None:
        self.store = store
        self.config = config
        self._limiter = RateLimiter(config.chat_interval, config.group_per_minute, config.overall_per_second)
        self._backoff = wait_exponential_jitter(multiplier=config.retry_initial, max=config.retry_max,
                                                jitter=config.retry_initial / 4)
        self._transport: Transport | None = None
        self._senders: dict[int, asyncio.Task[None]] = {}
        self._wake: dict[int, asyncio.Event] = {}
        self._moves: dict[int, int] = {}
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._scanner: asyncio.Task[None] | None = None
        self._rescan = asyncio.Event()
        self._busy: set[int] = set()  # chats with a request out or a fold under way, not stored yet
        self._stopping = False

    # ------------------------------------------------------------ lifecycle
    async def load(self) -> None:
        self._moves = await self.store.moves()

    async def start(self, transport: Transport) -> None:
        """Start sending (after the Bot exists); pending messages from an earlier run go first."""
        self._transport = transport
        self._scanner = asyncio.create_task(self._scan(), name="outbox scanner")

    async def stop(self) -> None:
        """Stop sending; what is not sent yet stays in the database for the next start.

        A request already on its way to Telegram is let finish (up to ``STOP_GRACE``) and its answer
        stored: cut off, Telegram may have shown the message while the database still says pending,
        and the next start would send it again.
        """
        self._stopping = True
        tasks = [t for t in (self._scanner, *self._senders.values()) if t is not None]
        busy = [self._senders[c] for c in self._busy if c in self._senders]
        self._scanner = None
        self._senders.clear()
        for task in tasks:
            if task not in busy:  # waiting or pacing: nothing is out, nothing to lose
                task.cancel()
        if busy:
            await asyncio.wait(busy, timeout=STOP_GRACE)  # each ends once its answer is stored
            for task in busy:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._transport = None
        self._stopping = False

    @property
    def running(self) -> bool:
        return self._scanner is not None and not self._scanner.done()

    # ---------------------------------------------------------------- API
    async def enqueue_many(self, messages: Sequence[tuple[int, OutMessage]]) -> list[int]:
        """One message each to several chats (an alert's fan-out), stored in one transaction."""
        resolved = [(self.resolve(chat_id), m) for chat_id, m in messages]
        ids = await self.store.enqueue_many(resolved)
        for chat_id in {c for c, _ in resolved}:
            self._poke(chat_id)
        return ids

    async def enqueue(self, chat_id: int, messages: Sequence[OutMessage]) -> list[int]:
        """Store ``messages`` for ``chat_id`` (all or none), in this order; the chat's sender takes them."""
        return await self.enqueue_many([(chat_id, m) for m in messages])

    def resolve(self, chat_id: int) -> int:
        """The id a chat has now (a group that became a supergroup has a new one)."""
        seen = set()
        while chat_id in self._moves and chat_id not in seen:
            seen.add(chat_id)
            chat_id = self._moves[chat_id]
        return chat_id

    def followed(self, chat_ids: Iterable[int]) -> frozenset[int]:
        """The allow-list's view: the listed chats and the supergroups they became."""
        return frozenset(self.resolve(c) for c in chat_ids) | frozenset(chat_ids)

    async def delivered(self, ids: Iterable[int], timeout: float) -> None:
        """Wait until these messages are sent, digested or failed (tests and the bench)."""
        futures = []
        for row_id in ids:
            # Waiting before reading: a row settled while the read is on its way still wakes us.
            future = self._waiters.setdefault(row_id, asyncio.get_running_loop().create_future())
            row = await self.store.get(row_id)
            if row is None or row.status != "pending":
                self._settle([row_id])
            futures.append(future)
        if futures:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*futures)

    async def stuck(self, after: float) -> bool:
        """A message of a chat that is not held has waited longer than ``after`` seconds."""
        oldest = await self.store.oldest_sendable()
        return oldest is not None and datetime.now(UTC) - oldest > timedelta(seconds=after)

    # -------------------------------------------------------------- senders
    def _poke(self, chat_id: int) -> None:
        if chat_id in self._wake:
            self._wake[chat_id].set()
        self._rescan.set()

    async def _scan(self) -> None:
        """Keep one sender per chat that has something to send (also rows written by another process)."""
        while True:
            self._rescan.clear()
            for chat_id in await self.store.sendable_chats():
                task = self._senders.get(chat_id)
                if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
                    # A bug or a database error must not end delivery for good: log it, start again.
                    log.error("outbox: sender for chat %s failed; restarting it", chat_id, exc_info=task.exception())
                if task is None or task.done():
                    self._wake[chat_id] = asyncio.Event()
                    self._senders[chat_id] = asyncio.create_task(self._serve(chat_id), name=f"outbox chat {chat_id}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RESCAN):  # not wait_for: on 3.11 it makes a task per wait
                    await self._rescan.wait()

    async def _serve(self, chat_id: int) -> None:
        """Deliver one chat's messages in order; ends only when the chat is held or has moved."""
        while not self._stopping:
            self._wake[chat_id].clear()  # before reading: an enqueue from now on wakes the pause below
            row = await self.store.head(chat_id)
            wait = RESCAN if row is None else row.next_attempt_at - time.time()
            if row is None or wait > 0:
                # A new message ends the wait early; RESCAN bounds it so that rows changed by another
                # process (gwbot outbox --retry) are seen.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(wait, RESCAN)):
                        await self._wake[chat_id].wait()
                continue
            # What piled up (an outage, gwbot's own downtime, 50 alerts at once) goes as one digest, the
            # head included: its own failed tries say nothing about the Gateways folded behind it.
            if await self._digest(chat_id, row):
                continue
            if row.split and len(split_text(row.message.text)) > MAX_PARTS:
                log.info("outbox: message %d too long even in parts; sending it as a file", row.id)
                await self.store.as_file(row.id, "message.txt", first_line(row.message, 200))
                continue
            try:
                outcome = await self._send(row)
            finally:
                self._busy.discard(chat_id)
            if outcome.kind is not OutcomeKind.SENT and not await self._handle(row, outcome):
                return

    async def _send(self, row: OutboxRow) -> Outcome:
        """Send one stored message (a split text part by part, each part's progress stored)."""
        edited = False
        if not row.split:
            message = await self._target(row)
            edited = message.edit_of is not None
            outcome = await self._deliver(row.chat_id, message)
        else:
            parts = split_text(row.message.text)
            outcome = Outcome(OutcomeKind.SENT)  # all parts out already: the mark was all that was missing
            for number in range(row.parts_sent, len(parts)):
                text = f"({number + 1}/{len(parts)}) {parts[number]}"
                outcome = await self._deliver(row.chat_id, OutMessage.plain(text, silent=row.message.silent))
                if outcome.kind is not OutcomeKind.SENT:
                    return outcome
                await self.store.update(row.id, parts_sent=number + 1)
        if outcome.kind is OutcomeKind.SENT:
            # An edit that went out new (its message never went out, or is gone) is its key's message from now on.
            await self.store.update(row.id, status=OutStatus.SENT, sent_at=datetime.now(UTC).isoformat(),
                                    telegram_id=outcome.message_id, last_error=None, edit=int(edited))
            if row.attempts:
                log.info("outbox: message %d to chat %s delivered after %d failed attempts", row.id, row.chat_id,
                         row.attempts)
            self._settle([row.id])
        return outcome

    async def _target(self, row: OutboxRow) -> OutMessage:
        """An edit names the Telegram message it changes; if that one never went out, it is sent new."""
        m = row.message
        if not m.edit or m.key is None:
            return m
        target = await self.store.sent_id(row.chat_id, m.key)
        return replace(m, edit_of=target) if target is not None else replace(m, edit=False)

    async def _deliver(self, chat_id: int, message: OutMessage) -> Outcome:
        """One request to Telegram, within the rate limits."""
        assert self._transport is not None
        stamp = await self._limiter.acquire(chat_id)
        self._busy.add(chat_id)  # from here a stop waits for the answer (see stop)
        outcome = await self._transport.send(chat_id, message)
        self._limiter.answered(chat_id)
        if outcome.kind is OutcomeKind.UNREACHABLE:
            self._limiter.refund(chat_id, stamp)
        return outcome

    def _settle(self, ids: Iterable[int]) -> None:
        for row_id in ids:
            future = self._waiters.pop(row_id, None)
            if future is not None and not future.done():
                future.set_result(None)

    async def _handle(self, row: OutboxRow, outcome: Outcome) -> bool:
        """React to a failed send; False ends this chat's sender (held or moved)."""
        kind, chat_id = outcome.kind, row.chat_id
        if kind is OutcomeKind.RETRY_AFTER:
            # Only this chat waits: other chats' senders go on.
            log.info("outbox: Telegram asks to wait %g s before sending to chat %s", outcome.retry_after, chat_id)
            await self.store.reschedule(row.id, time.time() + outcome.retry_after, row.attempts,
                                        f"429: retry after {outcome.retry_after:g} s")
            return True
        if kind in (OutcomeKind.BLOCKED, OutcomeKind.CHAT_NOT_FOUND):
            reason = HoldReason.BLOCKED if kind is OutcomeKind.BLOCKED else HoldReason.NOT_FOUND
            await self.store.hold(chat_id, reason, outcome.detail)
            await self.store.reschedule(row.id, 0, row.attempts + 1, outcome.detail)
            log.warning("outbox: stopped sending to chat %s (%s: %s); %d messages kept. After fixing it: "
                        "gwbot outbox --retry", chat_id, reason, outcome.detail, await self.store.count(chat_id))
            return False
        if kind is OutcomeKind.MIGRATED and outcome.new_chat_id is not None:
            moved = await self.store.move_chat(chat_id, outcome.new_chat_id)
            self._moves[chat_id] = outcome.new_chat_id
            log.warning("outbox: chat %s became supergroup %s; following it (%d pending messages moved, the "
                        "allow-list accepts the new id)", chat_id, outcome.new_chat_id, moved)
            self._rescan.set()
            return False
        if kind is OutcomeKind.TOO_LONG:
            return await self._too_long(row)
        if kind is OutcomeKind.BAD_BUTTONS and row.message.buttons:
            # Retrying would only be refused again: the text matters, the buttons are a convenience.
            log.warning("outbox: Telegram refused the buttons of message %d to chat %s (%s); sending it without "
                        "them: %s", row.id, chat_id, outcome.detail, first_line(row.message))
            await self.store.update(row.id, buttons=None)
            return True
        if kind is OutcomeKind.EDIT_GONE and row.message.edit:
            log.info("outbox: message %d edits a message that is gone (%s); sending it as a new one", row.id,
                     outcome.detail)
            await self.store.update(row.id, edit=0)
            return True
        attempts = row.attempts + 1
        if kind is not OutcomeKind.UNREACHABLE and attempts >= self.config.max_attempts:
            log.error("outbox: gave up on message %d after %d attempts: %s", row.id, attempts, outcome.detail)
            await self.store.update(row.id, status=OutStatus.FAILED, last_error=outcome.detail)
            self._settle([row.id])
            return True
        delay = self._delay(attempts)
        if kind is OutcomeKind.UNREACHABLE:
            level = logging.WARNING if row.attempts == 0 else logging.DEBUG  # one line per outage, not per retry
            log.log(level, "outbox: cannot reach Telegram for chat %s (%s); retrying in %.1f s, forever",
                    chat_id, outcome.detail, delay)
        else:
            log.warning("outbox: %s (attempt %d of %d, again in %.1f s)", outcome.detail, attempts,
                        self.config.max_attempts, delay)
        await self.store.reschedule(row.id, time.time() + delay, attempts, outcome.detail)
        return True

    async def _too_long(self, row: OutboxRow) -> bool:
        message = row.message
        if message.kind is OutKind.HTML:  # markup cannot be cut in parts safely
            log.info("outbox: formatted message %d too long for Telegram; sending it as a file", row.id)
            await self.store.as_file(row.id, "message.html", first_line(message, 200))
        elif message.kind is not OutKind.TEXT:
            log.info("outbox: caption of message %d too long for Telegram; shortened", row.id)
            await self.store.update(row.id, text=message.text[:CAPTION_LIMIT - 1] + "…")
        elif not row.split:
            log.info("outbox: message %d too long for Telegram; sending it in parts", row.id)
            await self.store.update(row.id, split=1, parts_sent=0)
        else:
            log.info("outbox: a part of message %d is still too long; sending it as a file", row.id)
            await self.store.as_file(row.id, "message.txt", first_line(message, 200))
        return True

    def _delay(self, attempt: int) -> float:
        """tenacity's exponential backoff with jitter; the attempt count comes from the database."""
        state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]  # only attempt_number is read
        state.attempt_number = attempt
        return self._backoff(state)

    async def _digest(self, chat_id: int, head: OutboxRow) -> bool:
        """Many waiting texts become one message (no flood on the squad's phones). True: the queue
        changed (folded now, or by another writer meanwhile), so ``head`` is to be read again.
        A digest still waiting takes in whatever piles up behind it."""
        least = 2 if _is_digest(head.message) else self.config.digest_after + 1
        if await self.store.count(chat_id) < least:
            return False  # the usual case: a COUNT, not every pending row read back
        # An edit changes its own alert's message: folded, it would make the digest an edit of that message.
        # A text already going out in parts finishes as it started.
        texts = [r for r in await self.store.pending(chat_id)
                 if r.message.kind is OutKind.TEXT and not r.message.edit and not r.parts_sent]
        if len(texts) < least:
            return False
        since = texts[0].created_at
        # A digest still waiting (Telegram went away again) is unpacked: its own first line says nothing.
        lines = [line for r in texts for line in (r.message.text.splitlines()[1:] if _is_digest(r.message)
                                                  else [f"• {r.created_at:%H:%M:%S} {first_line(r.message)}"])]
        text = (f"{DIGEST_MARK}{len(lines)} messages piled up for this chat since {since:%H:%M:%S} UTC; in short:\n"
                + "\n".join(lines))
        self._busy.add(chat_id)  # a stop waits for the fold too: a new start must not read around it
        try:
            if not await self.store.digest([r.id for r in texts], text):
                return True  # sent or folded meanwhile: the caller reads the queue again
        finally:
            self._busy.discard(chat_id)
        log.warning("outbox: %d messages to chat %s folded into one digest", len(texts), chat_id)
        self._settle(r.id for r in texts[1:])
        return True
