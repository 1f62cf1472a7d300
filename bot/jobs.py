"""Long checks as background tasks: one at a time per Gateway, cancellable, never lost.

Front ends start a job and get control back at once, so the chat keeps answering while a soak
runs; a second request for the same Gateway is refused with who started what, and when.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bot.checks import CheckResult
from bot.checks.base import EventSink, Operator, ProgressSink
from bot.health import LiveView
from bot.ibkr.events import ClientEvent
from bot.runner import Runner, RunOutcome, RunRequest, StepSink

log = logging.getLogger(__name__)

OnDone = Callable[["Job", RunOutcome | None, BaseException | None], Awaitable[None]]


@dataclass(frozen=True)
class Job:
    gateway: str
    request: RunRequest
    run_id: int
    started_at: datetime
    task: asyncio.Task[RunOutcome] = field(compare=False, repr=False)
    # The Gateway as this run's client reports it, so /status costs no extra connection.
    live: LiveView = field(default_factory=LiveView, compare=False, repr=False)

    @property
    def what(self) -> str:
        return self.request.kind


class Busy(Exception):
    """The Gateway already has a run; ``job`` is None in the instant that run is being created."""

    def __init__(self, job: Job | None) -> None:
        super().__init__(f"{job.what} on {job.gateway} is already running" if job else "a run is starting")
        self.job = job


class JobBoard:
    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        # None holds a Gateway's slot while the run row is created, so two requests cannot both start.
        self._jobs: dict[str, Job | None] = {}
        self._notifying: set[asyncio.Task[None]] = set()  # keep references: the loop holds only weak ones

    def current(self, gateway: str) -> Job | None:
        return self._jobs.get(gateway)

    def busy(self, gateway: str) -> bool:
        """A run has this Gateway, or is being created on it."""
        return gateway in self._jobs

    async def start(self, request: RunRequest, operator: Operator, *, progress: ProgressSink | None = None,
                    on_result: Callable[[CheckResult], None] | None = None, on_event: EventSink | None = None,
                    on_done: OnDone | None = None, on_step: StepSink | None = None) -> Job:
        """Start a run in the background; raise Busy when this Gateway already has one."""
        gateway = self.runner.config.gateway(request.gateway).name
        if gateway in self._jobs:
            raise Busy(self.current(gateway))
        self._jobs[gateway] = None
        try:
            run_id = await self.runner.open_run(request)
        except BaseException:
            self._jobs.pop(gateway, None)
            raise
        live = LiveView()

        def feed(event: ClientEvent) -> None:
            live.on_event(event)
            if on_event is not None:
                on_event(event)

        task = asyncio.create_task(
            self.runner.run(request, operator, progress, on_result, run_id=run_id, on_event=feed, on_step=on_step),
            name=f"run {run_id}: {request.kind} on {gateway}")
        job = Job(gateway, request, run_id, datetime.now(UTC), task, live)
        assert self._jobs[gateway] is None
        self._jobs[gateway] = job
        task.add_done_callback(lambda t: self._finished(job, on_done))
        return job

    def _finished(self, job: Job, on_done: OnDone | None) -> None:
        self._jobs.pop(job.gateway, None)
        outcome: RunOutcome | None = None
        error: BaseException | None = None
        if job.task.cancelled():
            error = asyncio.CancelledError()
        elif (exc := job.task.exception()) is not None:
            error = exc
            log.error("job %s on %s crashed", job.what, job.gateway, exc_info=exc)
        else:
            outcome = job.task.result()
        if on_done is not None:
            task = asyncio.create_task(self._notify(on_done, job, outcome, error), name="job done")
            self._notifying.add(task)
            task.add_done_callback(self._notifying.discard)

    @staticmethod
    async def _notify(on_done: OnDone, job: Job, outcome: RunOutcome | None, error: BaseException | None) -> None:
        try:
            await on_done(job, outcome, error)
        except Exception:
            log.exception("reporting the end of %s on %s failed", job.what, job.gateway)

    async def cancel(self, gateway: str) -> Job | None:
        job = self.current(gateway)
        if job is None:
            return None
        job.task.cancel()
        await asyncio.gather(job.task, return_exceptions=True)
        return job

    async def shutdown(self) -> None:
        for gateway in list(self._jobs):
            await self.cancel(gateway)
        await asyncio.gather(*self._notifying, return_exceptions=True)
