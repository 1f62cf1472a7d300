"""The `gwbot` command line: run checks, the demo, the simulated Gateway, history and reports."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from bot import config_rules as valid
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
)
from bot.frontends.common import EXIT_FAILED, EXIT_SIGTERM, EXIT_USAGE, UsageError
from bot.frontends.logs import terminal_logging
from bot.lab import ibc_sim
from bot.lab.simctl import COMMANDS
from storage import StorageError

DEMO_SOAK_SECONDS = 20.0
CHAT_SOAK_SECONDS = 30.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse prints the whole usage block and exits; gwbot's rule is one line, exit 2.
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


Command = Callable[[Config, argparse.Namespace], Awaitable[int]]
# Each command's module is imported when it runs: `gwbot simctl` needs neither the Telegram
# library nor matplotlib, and starts in a third of the time.
CHECK_CHOICES = ("port", "connect", "soak", "disconnect", "reconnect", "drill", "errors")


def _lazy(module: str, name: str) -> Command:
    async def run(config: Config, args: argparse.Namespace) -> int:
        command: Command = getattr(importlib.import_module(f"bot.frontends.{module}"), name)
        return await command(config, args)
    return run


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

    def command(name: str, run: Command, help: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, parents=[common], help=help)
        parser.set_defaults(run=run)
        return parser

    demo = command("demo", _lazy("runs", "demo"), help="the whole checklist against the built-in simulated Gateway")
    demo.add_argument("--soak", type=_typed(SOAK_SECONDS), default=DEMO_SOAK_SECONDS, metavar="SECONDS",
                      help="soak length")

    check = command("check", _lazy("runs", "check"), help="run one check, or all of them, against a Gateway")
    check.add_argument("name", choices=[*CHECK_CHOICES, "all"])
    check.add_argument("--gateway", help="a Gateway name from the config (default: the first)")
    check.add_argument("--host", type=_typed(GATEWAY["host"]))
    check.add_argument("--port", type=_typed(GATEWAY["port"]))
    check.add_argument("--client-id", type=_typed(GATEWAY["client_id"]))
    check.add_argument("--duration", type=_typed(SOAK_SECONDS), metavar="SECONDS",
                       help="soak length (default: config)")
    check.add_argument("--simulate", action="store_true",
                       help="start a simulated Gateway on a free port, with an automatic operator")
    check.add_argument("--stop-on-failure", action=argparse.BooleanOptionalAction, default=None)

    sim = command("simulate", _lazy("lab_commands", "simulate"), help="run the simulated IB Gateway until Ctrl-C")
    sim.add_argument("--host", type=_typed(GATEWAY["host"]), default="127.0.0.1")
    sim.add_argument("--port", type=_typed(GATEWAY["port"]), default=4002)
    sim.add_argument("--account", type=_typed(GATEWAY["account"]), action="append",
                     help="managed account (repeatable; default DUO779750)")
    sim.add_argument("--control-port", type=_typed(Range(0, 65535, integer=True)), default=7462,
                     help="line-based control port, IBC's command server too (0: off)")
    ibc_sim.add_options(sim, _typed)

    ctl = command("simctl", _lazy("lab_commands", "simctl"),
                  help="control a running `gwbot simulate`: stop, start, restart 10, freeze ...")
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

    command("run", _lazy("runs", "run"), help="the Telegram bot (token from TELEGRAM_BOT_TOKEN) until Ctrl-C / SIGTERM")

    chat = command("chat", _lazy("chat", "chat"),
                   help="try the Telegram bot in this terminal: local Bot API stand-in + simulated Gateway")
    chat.add_argument("--soak", type=_typed(SOAK_SECONDS), default=CHAT_SOAK_SECONDS, metavar="SECONDS",
                      help="soak length for /checklist and a bare /soak")
    chat.add_argument("--attach", type=_typed(PORT), metavar="PORT",
                      help="use the Gateway on 127.0.0.1:PORT (e.g. `gwbot simulate` in another terminal) "
                           "instead of a built-in one; ! lines then go to its --control-port")
    chat.add_argument("--control-port", type=_typed(PORT), default=7462, help="with --attach: its simctl port")

    hist = command("history", _lazy("stored", "history"), help="list stored runs")
    hist.add_argument("--limit", type=_typed(Range(1, 100_000, integer=True)), default=20)

    logs = command("logs", _lazy("stored", "logs"), help="print every log line of a run")
    logs.add_argument("run_id", type=_typed(RUN_ID))

    out = command("outbox", _lazy("stored", "outbox"),
                  help="messages waiting to be sent: per chat, since when, last error")
    out.add_argument("--retry", action="store_true", help="release held chats and send everything now")

    bench = command("bench", _lazy("bench", "bench"),
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
    bench.add_argument("--watch-only", action="store_true", help="only the always-on watch's figures (and drills)")
    bench.add_argument("--drill-only", action="store_true", help="only the drill's figures")
    bench.add_argument("--drills", type=_typed(Range(0, 1000, integer=True)), default=3,
                       help="IBC RESTART drills timed stage by stage (default 3; 0: skip them)")
    bench.add_argument("--drill-down", type=_typed(Range(0, 3600)), default=40.0, metavar="SECONDS",
                       help="a drill's restart: the port closed this long (default 40)")
    bench.add_argument("--drill-ready-after", type=_typed(Range(0, 3600)), default=15.0, metavar="SECONDS",
                       help="then the API ready this much later (default 15)")
    bench.add_argument("--ibc-minute", type=_typed(ibc_sim.MINUTE), default=5.0, metavar="SECONDS",
                       help="the simulated IBC's 'next minute' that RESTART waits for (default 5; IBC's is 60)")
    bench.add_argument("--gateways", type=_typed(Range(1, 500, integer=True)), default=50,
                       help="Gateways watched at once (default 50)")
    bench.add_argument("--commands", type=_typed(Range(1, 100_000, integer=True)), default=1000,
                       help="chat commands timed while a soak runs and the Gateways are watched (default 1000)")
    bench.add_argument("--json", action="store_true", help="one JSON object per figure instead of the table")

    rep = command("report", _lazy("stored", "report"), help="print or write a run's report (markdown)")
    rep.add_argument("run_id", type=_typed(RUN_ID))
    rep.add_argument("--out", type=_typed(valid.file_path, Path), help="write to this file instead of printing")
    return p


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
    except (UsageError, ConfigError, StorageError) as e:  # one line: which file or token, what to do
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
