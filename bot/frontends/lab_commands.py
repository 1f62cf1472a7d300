"""`gwbot simulate` and `gwbot simctl`: the simulated Gateway and its control port."""

from __future__ import annotations

import argparse

from bot.config import Config
from bot.frontends.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError, stop_on_signals
from bot.lab import ibc_sim
from bot.lab.simctl import NO_CONTROL_PORT, CannotListen, for_people, send_control, serve


async def simulate(config: Config, args: argparse.Namespace) -> int:
    accounts = tuple(args.account or (config.gateway().account,))

    def listening() -> None:  # said once it is true: both ports are bound
        print(f"Simulated IB Gateway on {args.host}:{args.port}, accounts {', '.join(accounts)}"
              + (f"; control port {args.control_port} (gwbot simctl --help)" if args.control_port else "")
              + ". Ctrl-C to quit.", flush=True)
    try:
        # SIGTERM too: clients see a clean close, as when the Gateway is quit.
        await serve(args.host, args.port, accounts, args.control_port, until=stop_on_signals(), listening=listening,
                    ibc=ibc_sim.profile_from(args))
    except CannotListen as e:
        raise UsageError(f"gwbot simulate: {e}") from None
    print("Simulated IB Gateway stopped", flush=True)
    return EXIT_OK


async def simctl(_: Config, args: argparse.Namespace) -> int:
    flags = [f for f in ("--rst", "--deaf") if getattr(args, f[2:])]
    flags += ["--ready-after", args.ready_after] if args.ready_after is not None else []
    answer = await send_control(args.control_host, args.control_port, " ".join([*args.words, *flags]))
    print(for_people(answer))
    if answer.startswith("OK"):
        return EXIT_OK
    return EXIT_FAILED if answer.startswith(NO_CONTROL_PORT) else EXIT_USAGE  # the simulator refused our words
