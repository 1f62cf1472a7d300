"""What every check shares: its result, progress, the operator it may need, and the run frame.

A check is one file with one ``Check`` subclass that implements :meth:`Check.execute`; the base
class times it, turns exceptions and cancellation into honest statuses, and builds the result.
The same class declares the options a request may carry for it, and renders its stored record:
its summary line, its lines in the report, its recommendations. Its metric names are constants
in its file. Checks know nothing of Telegram or terminals: they talk to people only through
:class:`Operator`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Protocol, TypeVar

from bot.config import Config, GatewayConfig
from bot.ibkr.client import IBKRClient
from bot.ibkr.errors import GatewayError
from bot.ibkr.events import ClientEvent
from storage.models import CheckRecord, CheckResult, CheckStatus, Metric, RunRecord, RunStatus

log = logging.getLogger(__name__)
T = TypeVar("T")
WARNING_MARK = "⚠️ Warning:"
PASS, FAIL, NOT_RUN = "✅", "❌", "⏸️"
_MARKS: dict[str, str] = {RunStatus.PASSED: PASS, RunStatus.RUNNING: "⏳", RunStatus.CANCELLED: "🚫",
                          RunStatus.INTERRUPTED: "⚠️", CheckStatus.SKIPPED: "⏭️"}


def status_mark(status: str) -> str:
    """The mark of a run's or a check's status (both enums share these values)."""
    return _MARKS.get(status, FAIL)  # StrEnum members hash and compare as their values


def mark(ok: bool | None) -> str:
    """A checklist line's mark: passed, failed, or not run (None)."""
    return NOT_RUN if ok is None else PASS if ok else FAIL


def passed(check: CheckRecord | None) -> bool | None:
    return None if check is None else check.passed


@dataclass(frozen=True)
class Progress:
    check: str
    message: str
    elapsed: float
    fraction: float | None = None
    remaining: float | None = None
    last_rtt: float | None = None


class OperatorAction(StrEnum):
    STOP_GATEWAY = "stop the Gateway"
    START_GATEWAY = "start the Gateway"


class Reply(StrEnum):
    DONE = "done"
    ABORT = "abort"


@dataclass(frozen=True)
class OperatorReply:
    reply: Reply
    by: str = ""


class Operator(Protocol):
    """The person (or automaton) doing the manual steps.

    ``ask`` shows the request and returns when the operator answers. The check races it
    against the event itself and cancels ``ask`` when the event wins, so an implementation
    must clean up (remove buttons, stop reading) on cancellation.
    """

    async def tell(self, text: str) -> None: ...

    async def ask(self, action: OperatorAction, text: str) -> OperatorReply: ...


class OperatorAborted(Exception):
    """The operator pressed Abort: the check ends as cancelled, not failed."""

    def __init__(self, by: str) -> None:
        super().__init__(f"aborted by {by or 'the operator'}")


class CheckSkipped(Exception):
    """The check does not apply to this Gateway (a drill without IBC): one line saying what to do instead."""


class OperatorUnreachable(Exception):
    """The operator could not be asked (their chat refused the question): the check fails saying
    so, instead of crashing or waiting for a person who was never told."""


@dataclass(frozen=True, kw_only=True)
class OperatorStep(ClientEvent):
    """Recorded with the run: what the operator was asked, and who answered what."""

    action: OperatorAction
    outcome: str  # "asked", a Reply value, "event" or "timeout"
    by: str = ""


async def await_operator(ctx: CheckContext, action: OperatorAction, text: str, event: Awaitable[T],
                         timeout: float, grace: float) -> tuple[T | None, OperatorReply | None]:
    """Ask the operator to act and wait for the event itself, whichever tells us first: the event
    (None when it did not come) and the reply (None when the event won or nobody answered in time).

    Done without the event waits ``grace`` more seconds for it; Abort raises OperatorAborted.
    """
    ctx.on_event(OperatorStep(action=action, outcome="asked"))
    event_task = asyncio.ensure_future(event)
    ask_task = asyncio.ensure_future(ctx.operator.ask(action, text))
    try:
        await asyncio.wait({event_task, ask_task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if event_task.done():
            ctx.on_event(OperatorStep(action=action, outcome="event"))
            return event_task.result(), None
        if not ask_task.done():
            ctx.on_event(OperatorStep(action=action, outcome="timeout"))
            return None, None
        reply = ask_task.result()
        ctx.on_event(OperatorStep(action=action, outcome=reply.reply.value, by=reply.by))
        if reply.reply is Reply.ABORT:
            raise OperatorAborted(reply.by)
        await asyncio.wait({event_task}, timeout=grace)
        return event_task.result() if event_task.done() else None, reply
    finally:
        for task in (event_task, ask_task):
            task.cancel()
        await asyncio.gather(event_task, ask_task, return_exceptions=True)


ProgressSink = Callable[[Progress], None]
EventSink = Callable[[ClientEvent], None]


@dataclass(frozen=True)
class CheckContext:
    """Everything a check may use; built by the runner, replaced freely by tests."""

    config: Config
    gateway: GatewayConfig
    operator: Operator
    progress: ProgressSink = lambda _: None
    on_event: EventSink = lambda _: None
    # Client option overrides for every client this run makes (tests shorten delays here).
    client_options: dict[str, Any] = field(default_factory=dict)

    def client(self, **overrides: Any) -> IBKRClient:
        """A client for the target Gateway whose events are recorded with the run."""
        client = IBKRClient.from_config(self.gateway, **(self.client_options | overrides))
        client.events.subscribe(self.on_event)
        return client


class Recorder:
    """Collects what a check measured and decided while it runs."""

    def __init__(self, check: str, ctx: CheckContext) -> None:
        self.check = check
        self._ctx = ctx
        self._start = time.monotonic()
        self.metrics: list[Metric] = []
        self.findings: list[str] = []
        self.series: list[tuple[float, float | None]] = []
        self.failures: list[str] = []
        self.hints: list[str] = []
        self.warnings: list[str] = []
        self.facts: dict[str, str] = {}

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def metric(self, name: str, value: float, unit: str) -> None:
        self.metrics.append(Metric(name, value, unit))

    def note(self, text: str) -> None:
        log.info("%s: %s", self.check, text)
        self.findings.append(text)

    def warn(self, text: str) -> None:
        """Worth knowing, not a failure."""
        log.warning("%s: warning: %s", self.check, text)
        self.warnings.append(text)

    def fail(self, text: str, hints: tuple[str, ...] = ()) -> None:
        log.warning("%s: FAIL: %s", self.check, text)
        self.failures.append(text)
        self.hints.extend(h for h in hints if h not in self.hints)

    def sample(self, rtt: float | None) -> None:
        self.series.append((round(self.elapsed, 3), rtt))

    def progress(self, message: str, *, fraction: float | None = None, remaining: float | None = None,
                 last_rtt: float | None = None) -> None:
        self._ctx.progress(Progress(self.check, message, self.elapsed, fraction, remaining, last_rtt))


@dataclass(frozen=True)
class NoOptions:
    """The options of a check that has none."""


class Check(ABC):
    """One step of the Task 5.1 checklist: how it runs, and how its stored record reads."""

    name: ClassVar[str]
    # The options a request may carry for this check (a frozen dataclass; see RunRequest.options).
    options_type: ClassVar[type[Any]] = NoOptions
    # The report section its lines go under, e.g. "Connection Test"; None: only its summary line.
    section: ClassVar[str | None] = None
    # Provokes errors on purpose: the report leaves the warnings logged while it ran out of its excerpt.
    provokes_errors: ClassVar[bool] = False
    # Its summary line's figures: the metric without which it has none, and a format over its
    # metrics by name (one it did not store reads 0).
    key_figures: ClassVar[tuple[str, str] | None] = None
    # The check it replaces in the checklist on a Gateway it applies to (see checklist()); None: its own step.
    stands_in_for: ClassVar[str | None] = None

    @classmethod
    def applies(cls, gateway: GatewayConfig) -> bool:
        """Whether it can run against ``gateway`` (a drill needs IBC configured)."""
        return True

    def __init__(self, options: Any = None) -> None:
        self.options = options if options is not None else self.options_type()

    @classmethod
    def figures(cls, check: CheckRecord) -> str:
        """Its key figures, for its summary line ("" when it has none or did not get that far)."""
        metrics = defaultdict(float, {m.name: m.value for m in check.metrics})
        if cls.key_figures is None or cls.key_figures[0] not in metrics:
            return ""
        return cls.key_figures[1].format_map(metrics)

    @classmethod
    def summary_line(cls, check: CheckRecord) -> str:
        text = f"{status_mark(check.status)} {check.name}: {check.status}"
        if figures := cls.figures(check):
            text += f", {figures}"
        if check.error and not check.passed:
            text += f"\n    {check.error}"
        return text

    @classmethod
    def report_lines(cls, run: RunRecord, check: CheckRecord | None) -> list[str]:
        """Its lines under its section of the report; ``check`` is None when it did not run."""
        return []

    @classmethod
    def recommendations(cls, run: RunRecord, check: CheckRecord | None) -> list[str]:
        """Advice beyond its hints, from its stored record."""
        return []

    @abstractmethod
    async def execute(self, ctx: CheckContext, rec: Recorder) -> None:
        """Measure and decide; call ``rec.fail`` for every failed criterion."""

    async def run(self, ctx: CheckContext) -> CheckResult:
        rec = Recorder(self.name, ctx)
        started = datetime.now(UTC)
        error: str | None = None
        log.info("check %s started against %s:%s", self.name, ctx.gateway.host, ctx.gateway.port)
        try:
            await self.execute(ctx, rec)
            status = CheckStatus.FAILED if rec.failures else CheckStatus.PASSED
        except asyncio.CancelledError:
            log.warning("check %s cancelled", self.name)
            result = self._result(rec, CheckStatus.CANCELLED, started, "cancelled before it finished")
            raise CheckCancelled(result) from None
        except OperatorAborted as e:
            log.warning("check %s %s", self.name, e)
            return self._result(rec, CheckStatus.CANCELLED, started, str(e))
        except CheckSkipped as e:
            log.warning("check %s skipped: %s", self.name, e)
            return self._result(rec, CheckStatus.SKIPPED, started, str(e))
        except GatewayError as e:
            rec.fail(str(e), e.hint_lines)
            status, error = CheckStatus.FAILED, str(e)
        except OperatorUnreachable as e:
            log.warning("check %s: %s", self.name, e)
            rec.fail(str(e))
            status, error = CheckStatus.FAILED, str(e)
        except Exception as e:
            log.exception("check %s crashed", self.name)
            status, error = CheckStatus.ERROR, f"{type(e).__name__}: {e}"
        if error is None and rec.failures:
            error = "; ".join(rec.failures)
        result = self._result(rec, status, started, error)
        log.info("check %s %s in %.2f s", self.name, result.status, rec.elapsed)
        return result

    @staticmethod
    def _result(rec: Recorder, status: CheckStatus, started: datetime, error: str | None) -> CheckResult:
        kept: dict[str, Any] = {name: tuple(getattr(rec, name)) for name in
                                ("metrics", "findings", "hints", "series", "warnings")}
        return CheckResult(name=rec.check, status=status, started_at=started, ended_at=datetime.now(UTC), error=error,
                           facts=dict(rec.facts), **kept)


class CheckCancelled(asyncio.CancelledError):
    """Cancellation that carries the partial result, so the runner can store it as cancelled."""

    def __init__(self, result: CheckResult) -> None:
        super().__init__(result.error)
        self.result = result
