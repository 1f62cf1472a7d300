"""The Task 5.1 checklist, one file per check. Adding a check = adding its file and a line in CHECKS."""

from __future__ import annotations

from collections.abc import Iterable

from bot.checks.base import Check, CheckContext, CheckResult, CheckStatus
from bot.checks.connect import ConnectCheck
from bot.checks.disconnect import DisconnectCheck
from bot.checks.errors import ErrorsCheck
from bot.checks.port import PortCheck
from bot.checks.reconnect import ReconnectCheck
from bot.checks.soak import SoakCheck

# Checklist order: the seed's steps 1-5; the report's sections follow it too.
CHECKS: tuple[type[Check], ...] = (PortCheck, ConnectCheck, SoakCheck, DisconnectCheck, ReconnectCheck, ErrorsCheck)
CHECK_NAMES: tuple[str, ...] = tuple(c.name for c in CHECKS)


def check_type(name: str) -> type[Check]:
    for cls in CHECKS:
        if cls.name == name:
            return cls
    raise KeyError(f"unknown check '{name}'; known: {', '.join(CHECK_NAMES)}")


def make_check(name: str, options: Iterable[object] = ()) -> Check:
    """A check by name, given the one of ``options`` of its own options type (else its defaults)."""
    cls = check_type(name)
    chosen = next((o for o in options if isinstance(o, cls.options_type)), None)
    return cls() if chosen is None else cls(chosen)  # a check without options needs no options argument


__all__ = ["CHECKS", "CHECK_NAMES", "Check", "CheckContext", "CheckResult", "CheckStatus", "check_type", "make_check"]
