"""Keeping the bot token's secret out of every log line gwbot writes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


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
