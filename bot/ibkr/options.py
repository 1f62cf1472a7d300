"""How one IBKRClient behaves: its options and its reconnect policy (tenacity's stop and wait)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from tenacity import stop_after_attempt, stop_after_delay, wait_fixed
from tenacity.stop import StopBaseT, stop_base
from tenacity.wait import WaitBaseT

from bot.config import ClientSettings, GatewayConfig


@dataclass(frozen=True)
class ReconnectPolicy:
    """When reconnecting gives up and how long it pauses after a spent attempt, as tenacity's stop
    and wait objects. They see ``attempt_number`` = attempts spent (the Gateway accepted and the
    API failed) and ``seconds_since_start`` = time since the drop; refused knocks spend nothing."""

    stop: StopBaseT
    wait: WaitBaseT

    @classmethod
    def from_config(cls, gw: GatewayConfig) -> ReconnectPolicy:
        stop: stop_base = stop_after_attempt(max(gw.max_reconnect_attempts, 1))  # 0 still allows the one try
        if gw.give_up_after is not None:
            stop = stop | stop_after_delay(gw.give_up_after)
        return cls(stop, wait_fixed(gw.reconnect_delay))

    @property
    def max_attempts(self) -> int:
        """The attempt limit inside ``stop`` (for "attempt 2/5"); 0 when it has none."""
        todo: list[Any] = [self.stop]
        while todo:
            stop = todo.pop()
            if isinstance(stop, stop_after_attempt):
                return stop.max_attempt_number
            todo.extend(getattr(stop, "stops", ()))
        return 0


# The checklist's policy (bot/config.py's defaults); frozen and stateless, so one is shared.
_CHECKLIST_RECONNECT = ReconnectPolicy.from_config(GatewayConfig())


@dataclass(frozen=True, kw_only=True)
class ClientOptions(ClientSettings):
    """How one IBKRClient behaves: the Gateway settings it reads (ClientSettings, from config.yaml),
    its reconnect policy, and timings config does not expose (tests shorten them)."""

    # None: stay down after a drop.
    reconnect: ReconnectPolicy | None = _CHECKLIST_RECONNECT
    # How often the reconnect loop knocks on the port while the Gateway is down.
    probe_interval: float = 0.25
    # ib_async users report reqCurrentTime going unanswered when sent < ~1 s after the last one.
    min_ping_spacing: float = 1.0
    # How long a retry waits for accounts / next id once the handshake is answered (at least: a
    # slow link gets more, see HandshakeWatch.ready_wait). A Gateway still logging in leaves that
    # session unanswered (or drops it) and does not answer it once ready: a short wait and a
    # fresh try join it within about a second of its API being ready.
    ready_wait: float = 1.0

    @classmethod
    def from_config(cls, gw: GatewayConfig, **overrides: Any) -> ClientOptions:
        """``gw``'s settings and reconnect policy; ``overrides`` replace fields of the result."""
        settings = {f.name: getattr(gw, f.name) for f in fields(ClientSettings)}
        return replace(cls(**settings, reconnect=ReconnectPolicy.from_config(gw)), **overrides)
