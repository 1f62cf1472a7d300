"""`gwbot history`, `outbox`, `logs` and `report`: reading what is stored (never creating it)."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import AsyncIterator

from bot import report as reports
from bot.config import Config
from bot.frontends.common import EXIT_OK, UsageError
from bot.outbox import RESCAN, first_line
from bot.services import database_path
from storage import Repository, RunRecord


@contextlib.asynccontextmanager
async def stored(config: Config, *, for_reading: bool = True) -> AsyncIterator[Repository | None]:
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


async def history(config: Config, args: argparse.Namespace) -> int:
    async with stored(config) as repo:
        runs = await repo.list_runs(limit=args.limit) if repo else []
        holds = await repo.outbox.holds() if repo else []
    print(f"Database: {database_path(config)}" + ("" if repo else " (none yet)"))
    if not runs:
        print("No runs yet. Try: gwbot demo")
    for r in runs:
        took = f"{(r.ended_at - r.started_at).total_seconds():.0f} s" if r.ended_at else "-"
        print(f"#{r.id:<4} {r.started_at:%Y-%m-%d %H:%M} {reports.status_mark(r.status)} {r.status:<11} "
              f"{r.kind:<10} {r.gateway:<10} {r.checks_passed}/{r.checks_total} passed  {took:>6}  {r.started_by}")
    for h in holds:
        print(f"⚠️ Not sending to chat {h.chat_id} since {h.since:%Y-%m-%d %H:%M} UTC ({h.reason}: {h.detail}); "
              f"{h.pending} messages kept. Once fixed: gwbot outbox --retry")
    return EXIT_OK


async def outbox(config: Config, args: argparse.Namespace) -> int:
    async with stored(config, for_reading=not args.retry) as repo:
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


async def stored_run(config: Config, run_id: int) -> RunRecord:
    return (await _stored_run(config, run_id, compare=False))[0]


async def _stored_run(config: Config, run_id: int, *, compare: bool) -> tuple[RunRecord, str]:
    """The run, and (``compare``) its comparison with this Gateway's earlier runs."""
    async with stored(config) as repo:
        if repo is None:
            raise UsageError(f"gwbot: no run #{run_id}: no history yet ({database_path(config)} does not exist; "
                             "try gwbot demo)")
        run = await repo.get_run(run_id)
        if run is None:
            raise UsageError(f"gwbot: no run #{run_id} (see gwbot history)")
        return run, await reports.compared(repo, run) if compare else ""


async def logs(config: Config, args: argparse.Namespace) -> int:
    run = await stored_run(config, args.run_id)
    print(reports.log_text(run) or f"Run #{run.id} has no log lines.")
    return EXIT_OK


async def report(config: Config, args: argparse.Namespace) -> int:
    run, compared = await _stored_run(config, args.run_id, compare=True)
    text = reports.markdown(run, compared)
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
