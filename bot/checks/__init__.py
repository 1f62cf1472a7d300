"""The Task 5.1 checklist, one file per check. Adding a check = adding its file and a line in CHECKS."""

from __future__ import annotations

from collections.abc import Iterable

from bot.checks.base import Check, CheckContext, CheckResult, CheckStatus
from bot.checks.connect import ConnectCheck
from bot.checks.disconnect import DisconnectCheck
from bot.checks.drill import DrillCheck
from bot.checks.errors import ErrorsCheck
from bot.checks.port import PortCheck
from bot.checks.reconnect import ReconnectCheck
from bot.checks.soak import SoakCheck
from bot.config import GatewayConfig

# Checklist order: the seed's steps 1-5; the report's sections follow it too.
CHECKS: tuple[type[Check], ...] = (PortCheck, ConnectCheck, SoakCheck, DisconnectCheck, ReconnectCheck, DrillCheck,
                                   ErrorsCheck)
CHECK_NAMES: tuple[str, ...] = tuple(c.name for c in CHECKS)


def checklist(gateway: GatewayConfig, names: tuple[str, ...] = CHECK_NAMES) -> tuple[str, ...]:
    """The checklist's steps for ``gateway``: a check that stands in for another replaces it where
    it applies (the drill for the guided reconnect when IBC is configured) and is left out elsewhere."""
    standing_in = {c.stands_in_for for c in CHECKS if c.stands_in_for is not None and c.applies(gateway)}
    return tuple(n for n in names if n not in standing_in
                 and (check_type(n).stands_in_for is None or check_type(n).applies(gateway)))


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


__all__ = ["CHECKS", "CHECK_NAMES", "Check", "CheckContext", "CheckResult", "CheckStatus", "check_type", "checklist",
           "make_check"]
