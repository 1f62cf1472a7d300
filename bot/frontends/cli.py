"""The `gwbot` command line: run checks, the demo, the simulated Gateway, history and reports."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bot import config_rules as valid
from bot import report
from bot.app import TokenRejected, run_chat
from bot.checks import CHECK_NAMES, CheckResult
from bot.checks.base import WARNING_MARK
from bot.checks.soak import SoakOptions
from bot.config import (
    PORT,
    RUN_ID,
    SOAK_SECONDS,
    Config,
    ConfigError,
    GatewayConfig,
    Range,
    Validator,
    load_config,
    rules,
    token_error,
)
from bot.frontends.logs import terminal_logging
from bot.frontends.terminal import ProgressPrinter, TerminalOperator, stdin_reader
from bot.lab import bench, bench_watch, ibc_sim, simctl
from bot.lab.chat import lab_chat
from bot.lab.operators import AutoOperator
from bot.lab.simctl import COMMANDS, CONTROL_HELP, NO_CONTROL_PORT, CannotListen, control, send_control, serve
from bot.lab.simulator import SimulatedGateway
from bot.lab.telegram_standin import User
from bot.lab.telegram_standin.terminal import TerminalChat
from bot.outbox import RESCAN, first_line
from bot.runner import RunOutcome, RunRequest, RunStatus
from bot.services import database_path, open_services, with_gateway
from storage import Repository, RunRecord, StorageError

log = logging.getLogger(__name__)

DEMO_SOAK_SECONDS = 20.0
CHAT_SOAK_SECONDS = 30.0
CHAT_USER_ID = 1001
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_SIGTERM = 128 + signal.SIGTERM


class UsageError(Exception):
    """A bad command line, or a run number that is not stored; the message is the one line shown."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse prints the whole usage block and exits; gwbot's rule is one line, exit 2.
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _typed(rule: Validator, convert: Callable[[Any], Any] = lambda v: v) -> Callable[[str], Any]:
    """An argparse ``type=`` through the rule of the config key the flag stands for (declared beside it)."""
    def parse(text: str) -> Any:
        try:
            return convert(valid.from_text(rule, text))
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"expected {e}, got {text[:40]!r}") from None
    return parse


GATEWAY = rules(GatewayConfig)  # --host, --port, --client-id and --account stand for these keys


def _parser() -> argparse.ArgumentParser:
    # --config and -v, accepted before and after the command. SUPPRESS: a command that is not given
    # them leaves the value from before the command alone.
    common = _Parser(add_help=False)
    common.add_argument("--config", type=_typed(valid.file_path), default=argparse.SUPPRESS,
                        help="config file (default: $GWBOT_CONFIG, else config/config.yaml)")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show log lines on the terminal")
    p = _Parser(prog="gwbot", description="Test and watch an IB Gateway connection.", parents=[common])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Callable[[Config, argparse.Namespace], Awaitable[int]],
                help: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, parents=[common], help=help)
        parser.set_defaults(run=run)
        return parser

    demo = command("demo", _cmd_demo, help="the whole checklist against the built-in simulated Gateway")
    demo.add_argument("--soak", type=_typed(SOAK_SECONDS), default=DEMO_SOAK_SECONDS, metavar="SECONDS",
                      help="soak length")

    check = command("check", _cmd_check, help="run one check, or all of them, against a Gateway")
    check.add_argument("name", choices=[*CHECK_NAMES, "all"])
    check.add_argument("--gateway", help="a Gateway name from the config (default: the first)")
    check.add_argument("--host", type=_typed(GATEWAY["host"]))
    check.add_argument("--port", type=_typed(GATEWAY["port"]))
    check.add_argument("--client-id", type=_typed(GATEWAY["client_id"]))
    check.add_argument("--duration", type=_typed(SOAK_SECONDS), metavar="SECONDS",
                       help="soak length (default: config)")
    check.add_argument("--simulate", action="store_true",
                       help="start a simulated Gateway on a free port, with an automatic operator")
    check.add_argument("--stop-on-failure", action=argparse.BooleanOptionalAction, default=None)

    sim = command("simulate", _cmd_simulate, help="run the simulated IB Gateway until Ctrl-C")
    sim.add_argument("--host", type=_typed(GATEWAY["host"]), default="127.0.0.1")
    sim.add_argument("--port", type=_typed(GATEWAY["port"]), default=4002)
    sim.add_argument("--account", type=_typed(GATEWAY["account"]), action="append",
                     help="managed account (repeatable; default DUO779750)")
    sim.add_argument("--control-port", type=_typed(Range(0, 65535, integer=True)), default=7462,
                     help="line-based control port, IBC's command server too (0: off)")
    ibc_sim.add_options(sim, _typed)

    ctl = command("simctl", _cmd_simctl, help="control a running `gwbot simulate`: stop, start, restart 10, freeze ...")
    ctl.formatter_class = argparse.RawDescriptionHelpFormatter  # the command list, one per line as written
    ctl.epilog = ("commands (COMMAND and its words):\n" + "\n".join(f"  {usage}" for usage, _, _ in COMMANDS.values())
                  + "\nIBC's commands, bare (IBC's replies): " + ", ".join(ibc_sim.WORDS))
    ctl.add_argument("words", nargs="+", metavar="COMMAND", help="one of the commands below, with its words")
    ctl.add_argument("--control-host", type=_typed(GATEWAY["host"]), default="127.0.0.1",
                     help="where `gwbot simulate` runs (default 127.0.0.1)")
    ctl.add_argument("--control-port", type=_typed(PORT), default=7462, help="its --control-port (default 7462)")
    for flag in ("--rst", "--deaf"):  # simctl's own options, passed through: stop --rst, reset 20 lost --deaf
        ctl.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    ctl.add_argument("--ready-after", metavar="S", help=argparse.SUPPRESS)

    command("run", _cmd_run, help="the Telegram bot (token from TELEGRAM_BOT_TOKEN) until Ctrl-C / SIGTERM")

    chat = command("chat", _cmd_chat,
                   help="try the Telegram bot in this terminal: local Bot API stand-in + simulated Gateway")
    chat.add_argument("--soak", type=_typed(SOAK_SECONDS), default=CHAT_SOAK_SECONDS, metavar="SECONDS",
                      help="soak length for /checklist and a bare /soak")
    chat.add_argument("--attach", type=_typed(PORT), metavar="PORT",
                      help="use the Gateway on 127.0.0.1:PORT (e.g. `gwbot simulate` in another terminal) "
                           "instead of a built-in one; ! lines then go to its --control-port")
    chat.add_argument("--control-port", type=_typed(PORT), default=7462, help="with --attach: its simctl port")

    hist = command("history", _cmd_history, help="list stored runs")
    hist.add_argument("--limit", type=_typed(Range(1, 100_000, integer=True)), default=20)

    logs = command("logs", _cmd_logs, help="print every log line of a run")
    logs.add_argument("run_id", type=_typed(RUN_ID))

    out = command("outbox", _cmd_outbox, help="messages waiting to be sent: per chat, since when, last error")
    out.add_argument("--retry", action="store_true", help="release held chats and send everything now")

    bench = command("bench", _cmd_bench,
                    help="measure detection, reconnect and loop-latency figures (simulated Gateway)")
    bench.add_argument("--trials", type=_typed(Range(1, 1000, integer=True)), default=10)
    bench.add_argument("--outage", type=_typed(Range(0, 3600, low_open=True)), default=90.0, metavar="SECONDS",
                       help="how long the simulator process stays killed for the long-outage figure (default 90)")
    bench.add_argument("--api-outage", type=_typed(Range(0, 3600)), default=120.0, metavar="SECONDS",
                       help="how long the Bot API refuses connections in the outbox figure (0: skip it)")
    bench.add_argument("--restart", type=_typed(Range(0, 3600)), default=60.0, metavar="SECONDS",
                       help="how long the port stays closed in the watch's restart figure (default 60)")
    bench.add_argument("--ready-after", type=_typed(Range(0, 3600, low_open=True)), default=15.0, metavar="SECONDS",
                       help="then how long until its API is ready, as if logging in (default 15)")
    bench.add_argument("--watch-only", action="store_true", help="only the always-on watch's figures")
    bench.add_argument("--gateways", type=_typed(Range(1, 500, integer=True)), default=50,
                       help="Gateways watched at once (default 50)")
    bench.add_argument("--commands", type=_typed(Range(1, 100_000, integer=True)), default=1000,
                       help="chat commands timed while a soak runs and the Gateways are watched (default 1000)")
    bench.add_argument("--json", action="store_true", help="one JSON object per figure instead of the table")

    rep = command("report", _cmd_report, help="print or write a run's report (markdown)")
    rep.add_argument("run_id", type=_typed(RUN_ID))
    rep.add_argument("--out", type=_typed(valid.file_path, Path), help="write to this file instead of printing")
    return p


def _who() -> str:
    try:
        return f"{getpass.getuser()} (terminal)"
    except (KeyError, OSError):
        return "terminal"


async def _run_checks(config: Config, request: RunRequest, simulate: bool) -> tuple[RunOutcome, str]:
    printer = ProgressPrinter()

    def on_result(result: CheckResult) -> None:
        printer.done()
        line = f"{report.status_mark(result.status)} {result.name}: {result.status}"
        _print_lines([line + (f" - {result.error}" if result.error else ""),
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
        return outcome, report.markdown(stored)


async def _cmd_check(config: Config, args: argparse.Namespace) -> int:
    config = with_gateway(config, args.gateway, host=args.host, port=args.port, client_id=args.client_id)
    names = CHECK_NAMES if args.name == "all" else (args.name,)
    request = RunRequest(names, started_by=_who(), origin="terminal", gateway=args.gateway,
                         stop_on_failure=args.stop_on_failure, options=(SoakOptions(args.duration),))
    outcome, _ = await _run_checks(config, request, args.simulate)
    print(f"\nRun #{outcome.run_id}: {outcome.status.upper()}  (full report: gwbot report {outcome.run_id})")
    return EXIT_OK if outcome.status is RunStatus.PASSED else EXIT_FAILED


async def _cmd_demo(config: Config, args: argparse.Namespace) -> int:
    # A demo should show the heartbeat working within its short soak.
    config = replace(config, soak=replace(config.soak, heartbeat_interval=1.0, progress_interval=5.0))
    request = RunRequest(CHECK_NAMES, started_by=_who(), origin="demo", stop_on_failure=False,
                         options=(SoakOptions(args.soak),))
    outcome, markdown = await _run_checks(config, request, simulate=True)
    print("\n" + markdown)
    print(f"Run #{outcome.run_id}: {outcome.status.upper()}")
    return EXIT_OK if outcome.status is RunStatus.PASSED else EXIT_FAILED


def _stop_on_signals() -> asyncio.Event:
    """An event that Ctrl-C and SIGTERM set, for a graceful stop."""
    stop, loop = asyncio.Event(), asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on Windows
            loop.add_signal_handler(sig, stop.set)
    return stop


async def _cmd_run(config: Config, _: argparse.Namespace) -> int:
    token = config.telegram.token
    if not token:
        raise UsageError("gwbot: set TELEGRAM_BOT_TOKEN to your bot's token (from @BotFather); see README")
    if problem := token_error(token):
        raise UsageError(f"gwbot: {problem}")
    if not config.telegram.allowed_chat_ids:
        log.warning("telegram.allowed_chat_ids is empty: the bot will refuse everyone and tell them their ids")
    # TokenRejected goes up to main: said after the watch's goodbye lines, so it is the last line.
    await run_chat(config, token, _stop_on_signals())
    print("gwbot: stopped", file=sys.stderr)
    return EXIT_OK


CHAT_DOWN_AFTER = 0.5  # seconds: gwbot chat's watch reports a !stop at once ...
CHAT_WATCH = {"knock_interval": 0.1, "max_pause": 1.0}  # ... and a !start within about a second


async def _cmd_chat(config: Config, args: argparse.Namespace) -> int:
    """The whole bot, against the Bot API stand-in and a simulated Gateway, typed at in this terminal."""
    stop = _stop_on_signals()
    config = replace(config, soak=replace(config.soak, duration=args.soak, heartbeat_interval=1.0),
                     telegram=replace(config.telegram, progress_interval=2.0),
                     # The watch reports a !stop within a second here: down_after short, the terminal is the alert chat.
                     watch=replace(config.watch, down_after=CHAT_DOWN_AFTER, alert_chat_ids=frozenset({CHAT_USER_ID})))
    async with lab_chat(config, [User(CHAT_USER_ID, "You", getpass.getuser())], watch_options=CHAT_WATCH,
                        attach_port=args.attach) as lab:
        gw = lab.config.gateway()
        where = "simulated" if lab.gateway else "attached to the"
        print(f"gwbot chat: {where} Gateway on {gw.host}:{gw.port}, Bot API stand-in on {lab.standin.base_url}.\n"
              "Type /help, /checklist or /reconnect; a number picks a button. Control the simulated Gateway with\n"
              f"!stop, !start, !freeze, !unfreeze, !status ... ({CONTROL_HELP.lower()}). /quit ends.\n",
              flush=True)

        async def local(line: str) -> str:
            if lab.gateway is not None:
                return simctl.for_people(await control(lab.gateway, line))
            return simctl.for_people(await send_control("127.0.0.1", args.control_port, line))

        terminal = TerminalChat(lab.standin, CHAT_USER_ID, CHAT_USER_ID, files_dir=config.data_dir / "chat-files",
                                local=local)
        typing = asyncio.create_task(terminal.run(stdin_reader()))
        stopped = asyncio.create_task(stop.wait())
        try:
            # Ctrl-C stops the bot; the chat must end with it, not wait for the next line.
            await asyncio.wait({typing, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (typing, stopped):
                task.cancel()
            await asyncio.gather(typing, stopped, return_exceptions=True)
    return EXIT_OK


async def _cmd_simulate(config: Config, args: argparse.Namespace) -> int:
    accounts = tuple(args.account or (config.gateway().account,))

    def listening() -> None:  # said once it is true: both ports are bound
        print(f"Simulated IB Gateway on {args.host}:{args.port}, accounts {', '.join(accounts)}"
              + (f"; control port {args.control_port} (gwbot simctl --help)" if args.control_port else "")
              + ". Ctrl-C to quit.", flush=True)
    try:
        # SIGTERM too: clients see a clean close, as when the Gateway is quit.
        await serve(args.host, args.port, accounts, args.control_port, until=_stop_on_signals(), listening=listening,
                    ibc=ibc_sim.profile_from(args))
    except CannotListen as e:
        raise UsageError(f"gwbot simulate: {e}") from None
    print("Simulated IB Gateway stopped", flush=True)
    return EXIT_OK


async def _cmd_simctl(_: Config, args: argparse.Namespace) -> int:
    flags = [f for f in ("--rst", "--deaf") if getattr(args, f[2:])]
    flags += ["--ready-after", args.ready_after] if args.ready_after is not None else []
    answer = await send_control(args.control_host, args.control_port, " ".join([*args.words, *flags]))
    print(simctl.for_people(answer))
    if answer.startswith("OK"):
        return EXIT_OK
    return EXIT_FAILED if answer.startswith(NO_CONTROL_PORT) else EXIT_USAGE  # the simulator refused our words


@contextlib.asynccontextmanager
async def _stored(config: Config, *, for_reading: bool = True) -> AsyncIterator[Repository | None]:
    """The database; None when there is none yet: only a command that stores something creates it."""
    try:
        missing = not database_path(config).exists()
    except OSError:  # cannot even look: opening it says why, in one line
        missing = False
    if missing:
        yield None
        return
    async with await Repository.open(database_path(config), for_reading=for_reading) as repo:  # works read-only too
        yield repo


async def _cmd_history(config: Config, args: argparse.Namespace) -> int:
    async with _stored(config) as repo:
        runs = await repo.list_runs(limit=args.limit) if repo else []
        holds = await repo.outbox.holds() if repo else []
    print(f"Database: {database_path(config)}" + ("" if repo else " (none yet)"))
    if not runs:
        print("No runs yet. Try: gwbot demo")
    for r in runs:
        took = f"{(r.ended_at - r.started_at).total_seconds():.0f} s" if r.ended_at else "-"
        print(f"#{r.id:<4} {r.started_at:%Y-%m-%d %H:%M} {report.status_mark(r.status)} {r.status:<11} "
              f"{r.kind:<10} {r.gateway:<10} {r.checks_passed}/{r.checks_total} passed  {took:>6}  {r.started_by}")
    for h in holds:
        print(f"⚠️ Not sending to chat {h.chat_id} since {h.since:%Y-%m-%d %H:%M} UTC ({h.reason}: {h.detail}); "
              f"{h.pending} messages kept. Once fixed: gwbot outbox --retry")
    return EXIT_OK


async def _cmd_outbox(config: Config, args: argparse.Namespace) -> int:
    async with _stored(config, for_reading=not args.retry) as repo:
        if repo is None:
            print("Nothing is held: no message was ever stored." if args.retry else "Outbox empty: nothing stored yet.")
            return EXIT_OK
        store = repo.outbox
        if args.retry:
            holds = await store.holds()
            due = await store.retry_now()
            print(f"Released {len(holds)} held chats; {due} messages are due now. A running `gwbot run` sends them "
                  f"within {RESCAN:g} s, else they go when it starts.")
            return EXIT_OK
        backlog, (dead, failed) = await store.backlog(), await store.failed()
    now = time.time()
    for b in backlog:
        state = (f"HELD since {b.held_since:%H:%M:%S} ({b.held}: {b.held_detail})" if b.held
                 else f"next try in {max(0.0, b.next_attempt_at - now):.0f} s")
        print(f"chat {b.chat_id}: {b.pending} pending since {b.oldest:%Y-%m-%d %H:%M:%S} UTC, {state}"
              + (f"; last error: {b.last_error}" if b.last_error else ""))
    if not backlog:
        print("Nothing is waiting to be sent." if dead else "Outbox empty: every message was delivered.")
    if dead:
        latest = f"; the latest {len(failed)}" if dead > len(failed) else ""
        print(f"{dead} message{'s' * (dead > 1)} could not be delivered (Telegram refused each of them again and "
              f"again; kept in the database, not sent again){latest}:")
    for row in failed:
        print(f"  #{row.id} to chat {row.chat_id}, written {row.created_at:%Y-%m-%d %H:%M} UTC: "
              f"\"{first_line(row.message)}\"; Telegram said: {row.last_error}")
    return EXIT_OK


async def _stored_run(config: Config, run_id: int) -> RunRecord:
    async with _stored(config) as repo:
        if repo is None:
            raise UsageError(f"gwbot: no run #{run_id}: no history yet ({database_path(config)} does not exist; "
                             "try gwbot demo)")
        run = await repo.get_run(run_id)
    if run is None:
        raise UsageError(f"gwbot: no run #{run_id} (see gwbot history)")
    return run


async def _cmd_logs(config: Config, args: argparse.Namespace) -> int:
    run = await _stored_run(config, args.run_id)
    print(report.log_text(run) or f"Run #{run.id} has no log lines.")
    return EXIT_OK


async def _cmd_report(config: Config, args: argparse.Namespace) -> int:
    run = await _stored_run(config, args.run_id)
    text = report.markdown(run)
    if args.out:
        try:
            args.out.write_text(text, encoding="utf-8")
        except OSError as e:
            raise UsageError(f"gwbot: cannot write {args.out}: {e.strerror}; give --out a file in a folder that "
                             "exists") from None
        print(f"Report for run #{run.id} written to {args.out}")
    else:
        print(text)
    return EXIT_OK


def _print_lines(lines: Iterable[str]) -> None:
    for line in lines:
        print(line, flush=True)


async def _cmd_bench(_: Config, args: argparse.Namespace) -> int:
    def say(text: str) -> None:  # what is being measured: the table's headings, not figures
        if not args.json:
            print(text, flush=True)

    def show(figures: Iterable[bench.Figure], line: Callable[[bench.Figure], str]) -> None:
        _print_lines(json.dumps(bench_watch.figure_json(f), ensure_ascii=False) if args.json else line(f)
                     for f in figures)

    if not args.watch_only:
        say(f"Measuring against the simulated Gateway ({args.trials} trials each) ...")
        show(await bench.measure(trials=args.trials), bench.Figure.line)
        show(await bench.measure_chat(), bench.Figure.line)
        show(await bench.measure_lifecycle(trials=args.trials, outage=args.outage), bench.Figure.line)
        show(await bench.measure_outbox_cost(), bench.Figure.line)
        if args.api_outage > 0:
            say(f"Outbox: the Bot API refuses connections for {args.api_outage:g} s while a /checklist ends ...")
            show(await bench.measure_outage(args.api_outage), bench.Figure.line)
    # The always-on watch's figures: its targets are p99s and worsts, hence their own line.
    say(f"The watch: simulator processes SIGKILLed, {args.trials} trials, a {args.outage:g} s outage, "
        f"{args.gateways} Gateways, {args.commands} commands ...")
    show(await bench_watch.measure_kill(trials=args.trials, outage=args.outage), bench_watch.figure_line)
    restarts = min(args.trials, 3)  # each takes restart + ready-after seconds (75 s by default)
    say(f"The watch: {restarts} restarts, port closed {args.restart:g} s, API ready {args.ready_after:g} s later ...")
    show(await bench_watch.measure_restart(restarts, args.restart, args.ready_after), bench_watch.figure_line)
    show(await bench_watch.measure_frozen(trials=min(args.trials, 5)), bench_watch.figure_line)
    show(await bench_watch.measure_many(gateways=args.gateways, commands=args.commands), bench_watch.figure_line)
    return EXIT_OK


async def _cancelled_by_sigterm(command: Awaitable[int]) -> int:
    """SIGTERM cancels the command as Ctrl-C does, so a running check is stored as cancelled.
    (run, chat and simulate install their own graceful stop for both signals.)"""
    task = asyncio.current_task()
    assert task is not None
    with contextlib.suppress(NotImplementedError):  # not on Windows
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await command


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        config = load_config(getattr(args, "config", None))
        if getattr(args, "gateway", None) is not None:
            config.gateway(args.gateway)  # a flag only the config can check
        with terminal_logging(config, getattr(args, "verbose", False), args.command):
            code = asyncio.run(_cancelled_by_sigterm(args.run(config, args)))
            sys.stdout.flush()  # here, not at exit, so that a closed pipe is handled below
            return code
    except (UsageError, ConfigError, StorageError, TokenRejected) as e:  # one line: which file or token, what to do
        print(e if isinstance(e, UsageError) else f"gwbot: {e}", file=sys.stderr)  # a UsageError names its command
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ngwbot: interrupted", file=sys.stderr)
        return 130
    except asyncio.CancelledError:
        print("gwbot: stopped (SIGTERM)", file=sys.stderr)
        return EXIT_SIGTERM
    except BrokenPipeError:
        # The reader went away (`gwbot report 1 | head`): as the Python docs advise, point stdout
        # at devnull so the interpreter's last flush does not fail again, and exit quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except (ConnectionError, OSError) as e:
        print(f"gwbot: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
