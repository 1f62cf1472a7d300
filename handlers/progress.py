"""Progress in chat: one silent message, edited in place at most every few seconds."""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from datetime import timedelta

from telegram import Bot
from telegram.error import BadRequest, RetryAfter, TelegramError
from telegram.warnings import PTBDeprecationWarning

from bot.checks.base import Progress
from handlers.telegram_html import fit_message

log = logging.getLogger(__name__)
BAR = 12


def retry_seconds(error: RetryAfter) -> float:
    """PTB 22 gives retry_after as int or timedelta (PTB_TIMEDELTA) and warns about the change."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = error.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def progress_text(kind: str, run_id: int, p: Progress) -> str:
    lines = [f"⏳ {kind}, run #{run_id}: {p.check}"]
    if p.fraction is not None:
        filled = round(p.fraction * BAR)
        lines.append(f"{'▓' * filled}{'░' * (BAR - filled)} {p.fraction:.0%}")
    timing = f"{p.elapsed:.0f} s elapsed" + (f", {p.remaining:.0f} s left" if p.remaining is not None else "")
    if p.last_rtt is not None:
        timing += f", last RTT {p.last_rtt * 1000:.1f} ms"
    lines += [timing, p.message]
    return "\n".join(lines)


class ProgressMessage:
    """A ProgressSink for a run: the first update sends, later ones edit, throttled.

    The check calls it synchronously and never waits for Telegram; one worker task sends the
    latest state when the interval allows, so flood control slows the edits, never the check.
    """

    def __init__(self, bot: Bot, chat_id: int, kind: str, run_id: int, interval: float) -> None:
        self.bot = bot
        self.chat_id = chat_id
        self.kind = kind
        self.run_id = run_id
        self.interval = interval
        self._latest: Progress | None = None
        self._message_id: int | None = None
        self._next_at = 0.0
        self._flood_until = 0.0  # Telegram said "retry after": not even the final edit before then
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    def __call__(self, progress: Progress) -> None:
        self._latest = progress
        self._wake.set()
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name=f"progress run {self.run_id}")

    async def close(self) -> None:
        """Send the last state (if any is pending) and stop."""
        if self._worker is None:
            return
        self._worker.cancel()
        await asyncio.gather(self._worker, return_exceptions=True)  # our own cancellation still reaches us
        await asyncio.sleep(max(0.0, self._flood_until - time.monotonic()))
        await self._flush()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(max(0.0, self._next_at - time.monotonic()))
            self._wake.clear()
            await self._flush()

    async def _flush(self) -> None:
        latest, self._latest = self._latest, None
        if latest is None:
            return
        text = fit_message(progress_text(self.kind, self.run_id, latest))
        self._next_at = time.monotonic() + self.interval
        try:
            if self._message_id is None:
                sent = await self.bot.send_message(self.chat_id, text, disable_notification=True)
                self._message_id = sent.message_id
            else:
                await self.bot.edit_message_text(text, self.chat_id, self._message_id)
        except asyncio.CancelledError:
            self._latest = self._latest or latest  # closed mid-request: the final flush sends it
            raise
        except RetryAfter as e:
            # Flood control: keep this state, and hold back until Telegram lets us speak again.
            pause = retry_seconds(e)
            self._next_at = self._flood_until = time.monotonic() + pause
            self._latest = self._latest or latest
            self._wake.set()
            log.info("progress edits paused %g s by flood control", pause)
        except BadRequest as e:
            if "not modified" not in str(e).lower():
                log.warning("progress edit failed: %s", e)
        except TelegramError as e:
            log.warning("progress edit failed: %s", e)
