"""`gwbot bench`: the speed and memory figures the README reports."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable

from bot.config import Config
from bot.frontends.common import EXIT_OK, print_lines
from bot.lab import bench as benches
from bot.lab import bench_watch


async def bench(_: Config, args: argparse.Namespace) -> int:
    def say(text: str) -> None:  # what is being measured: the table's headings, not figures
        if not args.json:
            print(text, flush=True)

    def show(figures: Iterable[benches.Figure], line: Callable[[benches.Figure], str]) -> None:
        print_lines(json.dumps(bench_watch.figure_json(f), ensure_ascii=False) if args.json else line(f)
                     for f in figures)

    async def drills() -> None:  # IBC RESTART, timed stage by stage
        if args.drills == 0:
            return
        say(f"Drills: {args.drills} IBC RESTARTs of a simulator process (IBC minute {args.ibc_minute:g} s, port "
            f"closed {args.drill_down:g} s, API ready {args.drill_ready_after:g} s later) ...")
        show(await bench_watch.measure_drill(args.drills, args.drill_down, args.drill_ready_after, args.ibc_minute),
             bench_watch.figure_line)

    if args.drill_only:
        await drills()
        return EXIT_OK
    if not args.watch_only:
        say(f"Measuring against the simulated Gateway ({args.trials} trials each) ...")
        show(await benches.measure(trials=args.trials), benches.Figure.line)
        show(await benches.measure_chat(), benches.Figure.line)
        show(await benches.measure_lifecycle(trials=args.trials, outage=args.outage), benches.Figure.line)
        show(await benches.measure_outbox_cost(), benches.Figure.line)
        if args.api_outage > 0:
            say(f"Outbox: the Bot API refuses connections for {args.api_outage:g} s while a /checklist ends ...")
            show(await benches.measure_outage(args.api_outage), benches.Figure.line)
    # The always-on watch's figures: its targets are p99s and worsts, hence their own line.
    say(f"The watch: simulator processes SIGKILLed, {args.trials} trials, a {args.outage:g} s outage, "
        f"{args.gateways} Gateways, {args.commands} commands ...")
    show(await bench_watch.measure_kill(trials=args.trials, outage=args.outage), bench_watch.figure_line)
    restarts = min(args.trials, 3)  # each takes restart + ready-after seconds (75 s by default)
    say(f"The watch: {restarts} restarts, port closed {args.restart:g} s, API ready {args.ready_after:g} s later ...")
    show(await bench_watch.measure_restart(restarts, args.restart, args.ready_after), bench_watch.figure_line)
    show(await bench_watch.measure_frozen(trials=min(args.trials, 5)), bench_watch.figure_line)
    show(await bench_watch.measure_many(gateways=args.gateways, commands=args.commands), bench_watch.figure_line)
    await drills()
    return EXIT_OK

