"""Scheduled drills: at each ``drill.schedule`` time, the drill on every Gateway with IBC configured.

A drill restarts the Gateway, so the scheduler holds back rather than risk a trade: never when the
drill's run could overlap one of the watch's expected windows or a ``drill.trading`` window, never
while another run has the Gateway, never on a live account unless ``drill.allow_live``. The result
goes to the alert chats through the outbox like a chat command's; how it looks is the front end's
(``post``), whom it goes to is the core's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol

from bot import report
from bot.checks.base import OperatorAction, OperatorReply, OperatorUnreachable
from bot.checks.drill import DrillCheck
from bot.config import GatewayConfig
from bot.expected_stops import drill_allowance, watch_expects_stops
from bot.ibkr.errors import is_paper_account
from bot.jobs import Busy, Job
from bot.outbox import Outbox
from bot.runner import RunOutcome, RunRequest
from bot.services import Services
from bot.watch.schedule import Occurrence, Schedule
from storage import OutMessage, RunRecord

log = logging.getLogger(__name__)
STARTED_BY = "schedule"
# A drill time passed this long ago (the machine slept, the clock stepped) is missed, not run late:
# it could now fall into a trading window the check at its own time would have avoided.
MISSED_AFTER = 300.0
WAKE_EVERY = 60.0  # the system timer re-reads the wall clock at least this often

Poster = Callable[[Outbox, int, RunRecord, tuple[OutMessage, ...], str], Awaitable[None]]


class Timer(Protocol):
    """The scheduler's time source: the wall clock, and a wait until a moment of it."""

    def wall(self) -> datetime: ...

    async def sleep_until(self, at: datetime) -> None: ...


@dataclass(frozen=True)
class SystemTimer:
    def wall(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, at: datetime) -> None:
        # In steps: a suspended machine or an NTP step moves the wall clock under one long sleep.
        while True:
            left = (at - self.wall()).total_seconds()
            if left <= 0:
                return
            await asyncio.sleep(min(left, WAKE_EVERY))


class Verdict(StrEnum):
    DUE = "due"
    WINDOW = "window"  # the drill could overlap an expected or trading window
    LIVE = "live"      # a live account, and drill.allow_live is off
    BUSY = "busy"      # another run has the Gateway


@dataclass(frozen=True)
class Decision:
    gateway: str
    verdict: Verdict
    why: str = ""
    run_id: int | None = None  # the drill's run, when one started


class NoOperator:
    """A scheduled drill has no one to ask; the drill itself never asks."""

    async def tell(self, text: str) -> None:
        log.info("scheduled drill: %s", text)

    async def ask(self, action: OperatorAction, text: str) -> OperatorReply:
        raise OperatorUnreachable("a scheduled run has no operator to ask")


class DrillScheduler:
    def __init__(self, services: Services, post: Poster, timer: Timer | None = None) -> None:
        self.services = services
        self.config = services.config
        self.post = post
        self.timer = timer or SystemTimer()

    @property
    def gateways(self) -> tuple[GatewayConfig, ...]:
        return tuple(gw for gw in self.config.gateways if DrillCheck.applies(gw))

    def decide(self, gw: GatewayConfig, at: datetime) -> Decision:
        """Whether to drill ``gw`` at ``at``, and if not, why not (one line)."""
        span = (at, at + timedelta(seconds=drill_allowance(self.config, gw)))
        windows = [*self.config.watch.schedule.expected_between(*span),
                   *Schedule(self.config.drill.trading).expected_between(*span)]
        if windows:
            return Decision(gw.name, Verdict.WINDOW, f"it could overlap the {_first(windows).label}")
        live = sorted(a for a in {gw.account, *self._seen_accounts(gw)} if not is_paper_account(a))
        if live and not self.config.drill.allow_live:
            return Decision(gw.name, Verdict.LIVE, f"account {', '.join(live)} is live; set drill.allow_live: true "
                                                   "to drill it anyway")
        if self.services.jobs.busy(gw.name):
            return Decision(gw.name, Verdict.BUSY, _busy(self.services.jobs.current(gw.name)))
        return Decision(gw.name, Verdict.DUE)

    def _seen_accounts(self, gw: GatewayConfig) -> tuple[str, ...]:
        """The accounts the watch saw logged in: the Gateway may not be on the configured one."""
        watch = self.services.watch
        return watch.watchers[gw.name].state.accounts if watch is not None and gw.name in watch.watchers else ()

    async def drill_all(self, at: datetime) -> list[Decision]:
        """The scheduled time ``at`` has come: drill each Gateway with IBC, or say why not."""
        decisions = []
        for gw in self.gateways:
            decision = self.decide(gw, at)
            if decision.verdict is Verdict.DUE:
                decision = await self._start(gw)
            if decision.verdict is not Verdict.DUE:
                log.info("scheduled drill on %s skipped: %s", gw.name, decision.why)
                if decision.verdict is not Verdict.WINDOW:  # a window is the schedule working as meant
                    await self._tell_alert_chats(OutMessage.plain(
                        f"⏭ Scheduled drill on {gw.name} skipped: {decision.why}.", silent=True))
            decisions.append(decision)
        return decisions

    async def _start(self, gw: GatewayConfig) -> Decision:
        schedule = self.config.drill.schedule
        request = RunRequest(("drill",), STARTED_BY, f"drill.schedule ({schedule.label if schedule else 'now'})",
                             gateway=gw.name)
        try:
            job = await self.services.jobs.start(
                request, NoOperator(), on_done=self._done,
                on_step=watch_expects_stops(self.config, self.services.watch, gw))
        except Busy as busy:  # a command took the Gateway between the decision and now
            return Decision(gw.name, Verdict.BUSY, _busy(busy.job))
        log.info("scheduled drill on %s: run #%s", gw.name, job.run_id)
        return Decision(gw.name, Verdict.DUE, run_id=job.run_id)

    async def _done(self, job: Job, outcome: RunOutcome | None, error: BaseException | None) -> None:
        run = await self.services.repo.get_run(job.run_id)
        if run is None:
            return
        first: tuple[OutMessage, ...] = ()
        if error is not None and run.status != "cancelled":
            first = (OutMessage.plain(f"⚠️ Scheduled drill run #{job.run_id} stopped with an internal error "
                                      f"({type(error).__name__}); it is logged."),)
        compared = await report.compared(self.services.repo, run)  # beside this Gateway's earlier drills
        for chat_id in await self._alert_chats():
            await self.post(self.services.outbox, chat_id, run, first, compared)

    async def _alert_chats(self) -> list[int]:
        chats = sorted(self.config.watch.alert_chat_ids | set(await self.services.repo.subscribers.chat_ids()))
        if not chats:
            log.info("scheduled drill: no chat to tell (watch.alert_chat_ids, /subscribe)")
        return chats

    async def _tell_alert_chats(self, message: OutMessage) -> None:
        chats = await self._alert_chats()
        if chats:
            await self.services.outbox.enqueue_many([(chat_id, message) for chat_id in chats])

    async def run(self) -> None:
        """Forever: sleep until the next scheduled time, then drill; a time long past is missed, not caught up."""
        schedule = self.config.drill.schedule
        if schedule is None or not self.gateways:
            return
        last = self.timer.wall()
        while True:
            due = schedule.next_after(last)
            log.info("next scheduled drill at %s UTC on %s", f"{due:%Y-%m-%d %H:%M}",
                     ", ".join(gw.name for gw in self.gateways))
            await self.timer.sleep_until(due)
            now = self.timer.wall()
            if (now - due).total_seconds() > MISSED_AFTER:
                log.warning("scheduled drill of %s UTC missed (it is %s UTC now); not run late",
                            f"{due:%Y-%m-%d %H:%M}", f"{now:%H:%M}")
                last = now
                continue
            try:
                await self.drill_all(due)
            except Exception:  # the next scheduled time still comes
                log.exception("scheduled drill of %s UTC failed to start", f"{due:%Y-%m-%d %H:%M}")
            last = max(due, now)


def _first(windows: list[Occurrence]) -> Occurrence:
    return min(windows, key=lambda o: o.start)


def _busy(job: Job | None) -> str:
    if job is None:
        return "another run was starting on it"
    return f"{job.what} run #{job.run_id} (started by {job.request.started_by}) was running on it"


@contextlib.asynccontextmanager
async def scheduled_drills(services: Services, post: Poster, timer: Timer | None = None
                           ) -> AsyncIterator[DrillScheduler]:
    """The scheduler's task while the context runs (nothing runs without drill.schedule)."""
    scheduler = DrillScheduler(services, post, timer)
    task = asyncio.create_task(scheduler.run(), name="drill schedule")
    try:
        yield scheduler
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
