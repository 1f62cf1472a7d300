"""The `gwbot` command line: run checks, the demo, the simulated Gateway, history and reports."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

from bot import bench, report
from bot.app import open_services, with_gateway
from bot.checks import CHECK_NAMES, CheckResult
from bot.config import Config, ConfigError, load_config
from bot.ibkr.simulator import SimulatedGateway, send_control, serve
from bot.operators import AutoOperator
from bot.runner import RunOutcome, RunRequest, RunStatus
from bot.terminal import ProgressPrinter, TerminalOperator, stdin_lines

log = logging.getLogger(__name__)

DEMO_SOAK_SECONDS = 20.0
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gwbot", description="Test and watch an IB Gateway connection.")
    p.add_argument("--config", help="config file (default: $GWBOT_CONFIG, else config/config.yaml)")
    p.add_argument("-v", "--verbose", action="store_true", help="show log lines on the terminal")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="the whole checklist against the built-in simulated Gateway")
    demo.add_argument("--soak", type=float, default=DEMO_SOAK_SECONDS, metavar="SECONDS", help="soak length")

    check = sub.add_parser("check", help="run one check, or all of them, against a Gateway")
    check.add_argument("name", choices=[*CHECK_NAMES, "all"])
    check.add_argument("--gateway", help="a Gateway name from the config (default: the first)")
    check.add_argument("--host")
    check.add_argument("--port", type=int)
    check.add_argument("--client-id", type=int)
    check.add_argument("--duration", type=float, metavar="SECONDS", help="soak length (default: config)")
    check.add_argument("--simulate", action="store_true",
                       help="start a simulated Gateway on a free port, with an automatic operator")
    check.add_argument("--stop-on-failure", action=argparse.BooleanOptionalAction, default=None)

    sim = sub.add_parser("simulate", help="run the simulated IB Gateway until Ctrl-C")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=4002)
    sim.add_argument("--account", action="append", help="managed account (repeatable; default DUO779750)")
    sim.add_argument("--control-port", type=int, default=7462, help="line-based control port (0: off)")

    ctl = sub.add_parser("simctl", help="control a running `gwbot simulate`: stop, start, restart 10, freeze ...")
    ctl.add_argument("words", nargs="+", metavar="COMMAND")
    ctl.add_argument("--control-host", default="127.0.0.1")
    ctl.add_argument("--control-port", type=int, default=7462)

    hist = sub.add_parser("history", help="list stored runs")
    hist.add_argument("--limit", type=int, default=20)

    bench = sub.add_parser("bench", help="measure detection, reconnect and loop-latency figures (simulated Gateway)")
    bench.add_argument("--trials", type=int, default=10)

    rep = sub.add_parser("report", help="print or write a run's report (markdown)")
    rep.add_argument("run_id", type=int)
    rep.add_argument("--out", type=Path, help="write to this file instead of printing")
    return p


def _setup_logging(config: Config | None, verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr)
    if config is not None and not verbose:
        # Stored with each run anyway; on the terminal they would drown the progress lines.
        logging.getLogger("ib_async").setLevel(logging.CRITICAL)
        logging.getLogger().setLevel(config.logging.level)
        logging.getLogger().handlers[0].setLevel(logging.ERROR)


def _who() -> str:
    try:
        return f"{getpass.getuser()} (terminal)"
    except (KeyError, OSError):
        return "terminal"


def _print_result(result: CheckResult) -> None:
    line = f"{report.status_mark(result.status)} {result.name}: {result.status}"
    print(f"{line}" + (f" - {result.error}" if result.error else ""), flush=True)
    for finding in result.findings:
        print(f"     {finding}", flush=True)
    for hint in result.hints:
        print(f"     hint: {hint}", flush=True)


@contextlib.asynccontextmanager
async def _simulated(config: Config, gateway: str | None) -> AsyncIterator[tuple[Config, SimulatedGateway]]:
    async with SimulatedGateway(port=0, accounts=(config.gateway(gateway).account,)) as sim:
        print(f"Simulated IB Gateway listening on 127.0.0.1:{sim.port}", flush=True)
        yield with_gateway(config, gateway, host="127.0.0.1", port=sim.port), sim


async def _run_checks(config: Config, request: RunRequest, simulate: bool) -> tuple[RunOutcome, str]:
    printer = ProgressPrinter()

    def on_result(result: CheckResult) -> None:
        printer.done()
        _print_result(result)

    async with contextlib.AsyncExitStack() as stack:
        if simulate:
            config, sim = await stack.enter_async_context(_simulated(config, request.gateway))
            operator: AutoOperator | TerminalOperator = AutoOperator(sim)
        else:
            operator = TerminalOperator(await stdin_lines())
        services = await stack.enter_async_context(open_services(config))
        gw = config.gateway(request.gateway)
        print(f"Running {', '.join(request.checks)} against {gw.name} ({gw.host}:{gw.port}, client id {gw.client_id})",
              flush=True)
        outcome = await services.runner.run(request, operator, printer, on_result)
        stored = await services.repo.get_run(outcome.run_id)
        assert stored is not None
        return outcome, report.markdown(stored)


async def _cmd_check(config: Config, args: argparse.Namespace) -> int:
    config = with_gateway(config, args.gateway, host=args.host, port=args.port, client_id=args.client_id)
    names = CHECK_NAMES if args.name == "all" else (args.name,)
    request = RunRequest(names, started_by=_who(), origin="terminal", gateway=args.gateway,
                         soak_duration=args.duration, stop_on_failure=args.stop_on_failure)
    outcome, markdown = await _run_checks(config, request, args.simulate)
    print(f"\nRun #{outcome.run_id}: {outcome.status.upper()}  (full report: gwbot report {outcome.run_id})")
    return EXIT_OK if outcome.status is RunStatus.PASSED else EXIT_FAILED


async def _cmd_demo(config: Config, args: argparse.Namespace) -> int:
    # A demo should show the heartbeat working within its short soak.
    config = replace(config, soak=replace(config.soak, heartbeat_interval=1.0, progress_interval=5.0))
    request = RunRequest(CHECK_NAMES, started_by=_who(), origin="demo", soak_duration=args.soak, stop_on_failure=False)
    outcome, markdown = await _run_checks(config, request, simulate=True)
    print("\n" + markdown)
    print(f"Run #{outcome.run_id}: {outcome.status.upper()}")
    return EXIT_OK if outcome.status is RunStatus.PASSED else EXIT_FAILED


async def _cmd_simulate(config: Config, args: argparse.Namespace) -> int:
    accounts = tuple(args.account or (config.gateway().account,))
    print(f"Simulated IB Gateway on {args.host}:{args.port}, accounts {', '.join(accounts)}"
          + (f"; control port {args.control_port} (gwbot simctl --help)" if args.control_port else "")
          + ". Ctrl-C to quit.", flush=True)
    logging.getLogger("bot.ibkr.simulator").setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.INFO)
    await serve(args.host, args.port, accounts, args.control_port)
    return EXIT_OK


async def _cmd_simctl(_: Config, args: argparse.Namespace) -> int:
    answer = await send_control(args.control_host, args.control_port, " ".join(args.words))
    print(answer)
    return EXIT_OK if answer.startswith("OK") else EXIT_FAILED


async def _cmd_history(config: Config, args: argparse.Namespace) -> int:
    async with open_services(config) as services:
        runs = await services.repo.list_runs(limit=args.limit)
    if not runs:
        print("No runs yet. Try: gwbot demo")
    for r in runs:
        took = f"{(r.ended_at - r.started_at).total_seconds():.0f} s" if r.ended_at else "-"
        print(f"#{r.id:<4} {r.started_at:%Y-%m-%d %H:%M} {report.status_mark(r.status)} {r.status:<11} "
              f"{r.kind:<10} {r.gateway:<10} {r.checks_passed}/{r.checks_total} passed  {took:>6}  {r.started_by}")
    return EXIT_OK


async def _cmd_report(config: Config, args: argparse.Namespace) -> int:
    async with open_services(config) as services:
        run = await services.repo.get_run(args.run_id)
    if run is None:
        print(f"gwbot: no run #{args.run_id} (see gwbot history)", file=sys.stderr)
        return EXIT_USAGE
    text = report.markdown(run)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        print(f"Report for run #{run.id} written to {args.out}")
    else:
        print(text)
    return EXIT_OK


async def _cmd_bench(_: Config, args: argparse.Namespace) -> int:
    print(f"Measuring against the simulated Gateway ({args.trials} trials each) ...", flush=True)
    for figure in await bench.measure(trials=args.trials):
        print(figure.line(), flush=True)
    return EXIT_OK


COMMANDS = {
    "bench": _cmd_bench,
    "demo": _cmd_demo,
    "check": _cmd_check,
    "simulate": _cmd_simulate,
    "simctl": _cmd_simctl,
    "history": _cmd_history,
    "report": _cmd_report,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"gwbot: {e}", file=sys.stderr)
        return EXIT_USAGE
    _setup_logging(config, args.verbose)
    try:
        return asyncio.run(COMMANDS[args.command](config, args))
    except KeyboardInterrupt:
        print("\ngwbot: interrupted", file=sys.stderr)
        return 130
    except (ConnectionError, OSError) as e:
        print(f"gwbot: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
