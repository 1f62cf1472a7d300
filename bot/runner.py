"""Runs checks against one Gateway and stores everything as it happens.

Both front ends (terminal and chat) go through :meth:`Runner.run`; they differ only in the
operator and the progress sink they pass in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bot.checks import CheckContext, CheckResult, CheckStatus, checklist, make_check
from bot.checks.base import CheckCancelled, EventSink, Operator, ProgressSink
from bot.config import Config
from bot.ibkr.events import ClientEvent
from bot.journal import RunJournal
from storage import Repository, RunStatus

log = logging.getLogger(__name__)
__all__ = ["RunOutcome", "RunRequest", "RunStatus", "Runner", "Step", "StepSink", "overall"]


@dataclass(frozen=True)
class RunRequest:
    checks: tuple[str, ...]
    started_by: str
    origin: str
    gateway: str | None = None
    stop_on_failure: bool | None = None  # None: the config's checks.stop_on_failure
    # Per-check options, each of its check's options_type (e.g. SoakOptions(duration=30)).
    options: tuple[object, ...] = ()

    @property
    def kind(self) -> str:
        return self.checks[0] if len(self.checks) == 1 else "checklist"


@dataclass(frozen=True)
class Step:
    """A check of a run begins (``running``) or ends, however it ends: what a front end needs to act
    for exactly as long as one step runs (the watch expects the reconnect step's stop, no other)."""

    check: str
    running: bool


StepSink = Callable[[Step], None]


@dataclass(frozen=True)
class RunOutcome:
    run_id: int
    status: RunStatus
    results: tuple[CheckResult, ...]


def overall(results: tuple[CheckResult, ...] | list[CheckResult]) -> RunStatus:
    statuses = {r.status for r in results}
    if statuses == {CheckStatus.SKIPPED}:
        return RunStatus.FAILED  # nothing was tested: never a pass
    worst = (CheckStatus.CANCELLED, CheckStatus.ERROR, CheckStatus.FAILED)  # the first one present decides
    return next((RunStatus(s) for s in worst if s in statuses), RunStatus.PASSED)


@dataclass
class Runner:
    config: Config
    repo: Repository
    # Options for every IBKRClient the checks make (tests and the demo shorten delays here).
    client_options: dict[str, Any] = field(default_factory=dict)

    async def open_run(self, request: RunRequest) -> int:
        """Store the run as running, so that it has a number before it starts."""
        gateway = self.config.gateway(request.gateway)
        return await self.repo.create_run(request.kind, gateway.name, request.started_by, request.origin,
                                          self.config.public_dict())

    async def run(self, request: RunRequest, operator: Operator, progress: ProgressSink | None = None,
                  on_result: Callable[[CheckResult], None] | None = None, *, run_id: int | None = None,
                  on_event: EventSink | None = None, on_step: StepSink | None = None) -> RunOutcome:
        """Run the requested checks in order. Cancelling the caller's task stores the run as cancelled."""
        gateway = self.config.gateway(request.gateway)
        stop_on_failure = (self.config.checks.stop_on_failure if request.stop_on_failure is None
                           else request.stop_on_failure)
        if run_id is None:
            run_id = await self.open_run(request)
        results: list[CheckResult] = []
        try:
            async with RunJournal(self.repo, run_id) as journal:
                def record(event: ClientEvent) -> None:
                    journal.event(event)
                    if on_event is not None:
                        on_event(event)

                ctx = CheckContext(self.config, gateway, operator, progress or (lambda _: None), record,
                                   self.client_options)
                log.info("run %s: %s against %s (%s:%s), started by %s from %s", run_id, ", ".join(request.checks),
                         gateway.name, gateway.host, gateway.port, request.started_by, request.origin)
                # Several checks are a checklist: its steps as they apply to this Gateway.
                names = checklist(gateway, request.checks) if len(request.checks) > 1 else request.checks
                for name in names:
                    result = await self._run_one(run_id, name, ctx, request, on_step or (lambda _: None))
                    results.append(result)
                    if on_result is not None:
                        on_result(result)
                    if stop_on_failure and not result.passed:
                        log.info("run %s: stopping after %s %s", run_id, name, result.status)
                        break
        except asyncio.CancelledError:  # CheckCancelled, or cancelled between two checks
            await self.repo.finish_run(run_id, RunStatus.CANCELLED)
            raise
        except Exception:
            await self.repo.finish_run(run_id, RunStatus.ERROR)
            raise
        status = overall(results)
        await self.repo.finish_run(run_id, status)
        log.info("run %s %s", run_id, status)
        return RunOutcome(run_id, status, tuple(results))

    async def _run_one(self, run_id: int, name: str, ctx: CheckContext, request: RunRequest,
                       on_step: StepSink) -> CheckResult:
        check = make_check(name, request.options)
        check_id = await self.repo.start_check(run_id, name)
        try:
            with _step(name, on_step):
                result = await check.run(ctx)
        except CheckCancelled as cancelled:
            await self._store(check_id, cancelled.result)
            raise
        await self._store(check_id, result)
        return result

    async def _store(self, check_id: int, r: CheckResult) -> None:
        await self.repo.finish_check(check_id, r.status, metrics=r.metrics, findings=r.findings, error=r.error,
                                     series=r.series, hints=r.hints, warnings=r.warnings, facts=r.facts)


@contextlib.contextmanager
def _step(check: str, on_step: StepSink) -> Iterator[None]:
    """Tell ``on_step`` that the check begins, and that it ended however it ends."""
    on_step(Step(check, running=True))
    try:
        yield
    finally:
        on_step(Step(check, running=False))
