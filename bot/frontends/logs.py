"""Logging for the `gwbot` command: what the terminal shows, and the bot token kept out of every record."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from bot.config import Config


@contextlib.contextmanager
def redacting(token: str | None) -> Iterator[None]:
    """Keep the bot token's secret out of every output (PTB's DEBUG line "Set Bot API URL" carries
    it, and so can an exception's text). Redacted at the record's creation, so every handler
    (terminal, the run journal's, any other) only ever sees the redacted text."""
    if not token:
        yield
        return
    secret, make = token.partition(":")[2] or token, logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed call; logging reports it itself later
            return record
        if secret in message:
            record.msg, record.args = message.replace(secret, "***"), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and secret in record.exc_text:
            record.exc_text = record.exc_text.replace(secret, "***")
        return record

    logging.setLogRecordFactory(factory)
    try:
        yield
    finally:
        logging.setLogRecordFactory(make)


@contextlib.contextmanager
def terminal_logging(config: Config, verbose: bool, command: str) -> Iterator[None]:
    """Records are always made at the configured level (runs store them, checks judge them);
    only what the terminal shows is filtered."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG if verbose else config.logging.level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per Bot API request otherwise
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    if not verbose and command not in ("run", "simulate"):  # those log what they do; others print progress
        # ib_async's errors are expected in the error matrix and stored with the run; on the
        # terminal they would drown the progress lines.
        console.setLevel(logging.ERROR)
        console.addFilter(lambda record: not record.name.startswith("ib_async"))
    root.addHandler(console)
    try:
        with redacting(config.telegram.token):
            yield
    finally:
        root.removeHandler(console)
        root.setLevel(level)
