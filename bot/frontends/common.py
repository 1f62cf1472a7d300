"""What the `gwbot` commands share: the one-line usage error, exit codes, signals, printing."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterable

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_SIGTERM = 128 + signal.SIGTERM


class UsageError(Exception):
    """A bad command line, or a run number that is not stored; the message is the one line shown."""


def stop_on_signals() -> asyncio.Event:
    """An event that Ctrl-C and SIGTERM set, for a graceful stop."""
    stop, loop = asyncio.Event(), asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on Windows
            loop.add_signal_handler(sig, stop.set)
    return stop


def print_lines(lines: Iterable[str]) -> None:
    for line in lines:
        print(line, flush=True)
