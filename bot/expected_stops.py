"""The steps that stop a Gateway on purpose, and the watch told so for exactly as long as one runs.

While the reconnect step or a drill runs (alone, in a checklist, or scheduled), the watch files a
stop as part of the test, not as an outage; before and after it, every stop is an outage.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from bot.checks.drill import DrillCheck
from bot.checks.reconnect import ReconnectCheck
from bot.config import Config, GatewayConfig
from bot.runner import Step, StepSink
from bot.watch.watcher import Watch, utc_now


def reconnect_allowance(config: Config, gw: GatewayConfig) -> float:
    """How long at most the reconnect step may run: its connect, both operator prompts, the
    reconnect budget, and a minute to spare. Only a bound: the step's end lifts the suppression."""
    return gw.connect_timeout + 2 * config.checks.operator_timeout + config.checks.reconnect_within + 60


def drill_allowance(config: Config, gw: GatewayConfig) -> float:
    """How long at most a drill may run: its connect, the drill's allowances, the reconnect budget and
    a minute to spare; a Gateway still down when the step ends is a real outage from then."""
    c = config.checks
    return gw.connect_timeout + c.drill_down_within + c.drill_back_within + c.reconnect_within + 60


# The steps that stop the Gateway on purpose: how long each may, and what the watch calls it.
STOP_WINDOWS: dict[str, tuple[Callable[[Config, GatewayConfig], float], str]] = {
    ReconnectCheck.name: (reconnect_allowance, "reconnect check"), DrillCheck.name: (drill_allowance, "drill")}


def watch_expects_stops(config: Config, watch: Watch | None, gw: GatewayConfig) -> StepSink:
    """A run's step sink that tells the watch while one of the STOP_WINDOWS steps runs on ``gw``."""
    def on_step(step: Step) -> None:
        if step.check not in STOP_WINDOWS or watch is None or gw.name not in watch.watchers:
            return
        allowance, reason = STOP_WINDOWS[step.check]
        until = utc_now() + timedelta(seconds=allowance(config, gw)) if step.running else None
        watch.suppress(gw.name, reason, until)
    return on_step
