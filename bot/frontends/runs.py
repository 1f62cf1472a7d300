"""`gwbot check`, `gwbot demo` and `gwbot run`: the checks from the terminal, and the Telegram bot."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import logging
import sys
from dataclasses import replace

from bot import report
from bot.app import TokenRejected, run_chat
from bot.checks import CHECK_NAMES, CheckResult
from bot.checks.base import WARNING_MARK
from bot.checks.soak import SoakOptions
from bot.config import Config, token_error
from bot.frontends.common import EXIT_FAILED, EXIT_OK, UsageError, print_lines, stop_on_signals
from bot.frontends.terminal import ProgressPrinter, TerminalOperator, stdin_reader
from bot.lab.operators import AutoOperator
from bot.lab.simulator import SimulatedGateway
from bot.runner import RunOutcome, RunRequest, RunStatus
from bot.services import open_services, with_gateway

log = logging.getLogger(__name__)


def who() -> str:
    try:
        return f"{getpass.getuser()} (terminal)"
    except (KeyError, OSError):
        return "terminal"


async def run_checks(config: Config, request: RunRequest, simulate: bool) -> tuple[RunOutcome, str]:
    printer = ProgressPrinter()

    def on_result(result: CheckResult) -> None:
        printer.done()
        line = f"{report.status_mark(result.status)} {result.name}: {result.status}"
        print_lines([line + (f" - {result.error}" if result.error else ""),
                      *(f"     {finding}" for finding in result.findings),
                      *(f"     {WARNING_MARK} {warning}" for warning in result.warnings),
                      *(f"     hint: {hint}" for hint in result.hints)])

    async with contextlib.AsyncExitStack() as stack:
        if simulate:
            sim = SimulatedGateway(port=0, accounts=(config.gateway(request.gateway).account,))
            await stack.enter_async_context(sim)
            config = with_gateway(config, request.gateway, host="127.0.0.1", port=sim.port)
            operator: AutoOperator | TerminalOperator = AutoOperator(sim)
        else:
            operator = TerminalOperator(stdin_reader())
        services = await stack.enter_async_context(open_services(config))
        if simulate:  # said once nothing can stop the run from starting (a bad database is one line, alone)
            print(f"Simulated IB Gateway listening on 127.0.0.1:{config.gateway(request.gateway).port}", flush=True)
        gw = config.gateway(request.gateway)
        print(f"Running {', '.join(request.checks)} against {gw.name} ({gw.host}:{gw.port}, client id {gw.client_id})",
              flush=True)
        outcome = await services.jobs.runner.run(request, operator, printer, on_result)
        stored = await services.repo.get_run(outcome.run_id)
        assert stored is not None
        return outcome, report.markdown(stored, await report.compared(services.repo, stored))


async def check(config: Config, args: argparse.Namespace) -> int:
    config = with_gateway(config, args.gateway, host=args.host, port=args.port, client_id=args.client_id)
    names = CHECK_NAMES if args.name == "all" else (args.name,)
    gw = config.gateway(args.gateway)
    if args.name == "drill" and gw.ibc is None:  # refused before anything is stored
        raise UsageError(f"gwbot check drill: Gateway '{gw.name}' has no ibc: {{port: …}} in the config (IBC's "
                         "command server); configure it, or use gwbot check reconnect")
    request = RunRequest(names, started_by=who(), origin="terminal", gateway=args.gateway,
                         stop_on_failure=args.stop_on_failure, options=(SoakOptions(args.duration),))
    outcome, _ = await run_checks(config, request, args.simulate)
    print(f"\nRun #{outcome.run_id}: {outcome.status.upper()}  (full report: gwbot report {outcome.run_id})")
    return EXIT_OK if outcome.status is RunStatus.PASSED else EXIT_FAILED


async def demo(config: Config, args: argparse.Namespace) -> int:
    # A demo should show the heartbeat working within its short soak.
    config = replace(config, soak=replace(config.soak, heartbeat_interval=1.0, progress_interval=5.0))
    request = RunRequest(CHECK_NAMES, started_by=who(), origin="demo", stop_on_failure=False,
                         options=(SoakOptions(args.soak),))
    outcome, markdown = await run_checks(config, request, simulate=True)
    print("\n" + markdown)
    print(f"Run #{outcome.run_id}: {outcome.status.upper()}")
    return EXIT_OK if outcome.status is RunStatus.PASSED else EXIT_FAILED


async def run(config: Config, _: argparse.Namespace) -> int:
    token = config.telegram.token
    if not token:
        raise UsageError("gwbot: set TELEGRAM_BOT_TOKEN to your bot's token (from @BotFather); see README")
    if problem := token_error(token):
        raise UsageError(f"gwbot: {problem}")
    if not config.telegram.allowed_chat_ids:
        log.warning("telegram.allowed_chat_ids is empty: the bot will refuse everyone and tell them their ids")
    try:
        await run_chat(config, token, stop_on_signals())
    except TokenRejected as e:  # said after the watch's goodbye lines, so it is the last line
        raise UsageError(f"gwbot: {e}") from None
    print("gwbot: stopped", file=sys.stderr)
    return EXIT_OK
