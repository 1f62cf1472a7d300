"""The Task 5.1 checklist, one file per check. Adding a check = adding a file and a line below."""

from __future__ import annotations

from bot.checks.base import Check, CheckContext, CheckResult, CheckStatus
from bot.checks.connect import ConnectCheck
from bot.checks.disconnect import DisconnectCheck
from bot.checks.errors import ErrorsCheck
from bot.checks.port import PortCheck
from bot.checks.reconnect import ReconnectCheck
from bot.checks.soak import SoakCheck

# Checklist order: the seed's steps 1-5.
CHECKS: tuple[type[Check], ...] = (PortCheck, ConnectCheck, SoakCheck, DisconnectCheck, ReconnectCheck, ErrorsCheck)
CHECK_NAMES: tuple[str, ...] = tuple(c.name for c in CHECKS)


def make_check(name: str, *, soak_duration: float | None = None) -> Check:
    """A check by name; ``soak_duration`` overrides the config's soak length."""
    if name == SoakCheck.name:
        return SoakCheck(soak_duration)
    for cls in CHECKS:
        if cls.name == name:
            return cls()
    raise KeyError(f"unknown check '{name}'; known: {', '.join(CHECK_NAMES)}")


__all__ = ["CHECKS", "CHECK_NAMES", "Check", "CheckContext", "CheckResult", "CheckStatus", "make_check"]
