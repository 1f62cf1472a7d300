"""A watched Gateway's live state, its outages, and what the watcher observes.

``GatewayState`` is the one source ``/status`` reads: the layer reached, the layer that failed
and since when, the last heartbeat RTT, the current incident. All records are frozen; the
watcher swaps in a new one on every change, so a reader never sees half an update.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from bot.ibkr.errors import Layer
from bot.watch.schedule import Occurrence
from storage import IncidentRecord


class DownCause(StrEnum):
    """Why a Gateway is unusable, in the words an alert uses."""

    CLOSED = "closed"                # the Gateway closed our socket (FIN)
    RESET = "reset"                  # connection reset (RST): a restart or a crash
    FROZEN = "frozen"                # the socket is up but no heartbeat answer
    IB_LINK = "ib_link"              # 1100 / 2110: the Gateway lost its own link to IB
    NOT_LOGGED_IN = "not_logged_in"  # the API answers the handshake but is not ready
    REFUSED = "refused"              # nothing listens on the port
    NO_HANDSHAKE = "no_handshake"    # the port accepts, the API never answers
    UNREACHABLE = "unreachable"      # connect timed out or the host does not resolve
    CLIENT_ID = "client_id"          # 326: our client id is held by someone
    REJECTED = "rejected"            # closed before the handshake: not a trusted IP
    LIVE_ACCOUNT = "live_account"    # logged in to a live account, and allow_live is off
    OTHER = "other"

    @property
    def words(self) -> str:
        """How it went down: 'closed by the Gateway'."""
        return _WORDS[self][0]

    @property
    def now_words(self) -> str:
        """What fails right now: 'TCP port refused'."""
        return _WORDS[self][1]


_WORDS: dict[DownCause, tuple[str, str]] = {
    DownCause.CLOSED: ("closed by the Gateway", "connection closed before the API was ready"),
    DownCause.RESET: ("connection reset by the Gateway", "connection reset"),
    DownCause.FROZEN: ("frozen (no heartbeat answer)", "no heartbeat answer"),
    DownCause.IB_LINK: ("IB link lost", "IB link down"),
    DownCause.NOT_LOGGED_IN: ("not logged in (API not ready)", "API not ready, not logged in"),
    DownCause.REFUSED: ("refused: the Gateway is not running", "TCP port refused"),
    DownCause.NO_HANDSHAKE: ("no API handshake answer", "no API handshake answer"),
    DownCause.UNREACHABLE: ("unreachable (connect timed out)", "host unreachable"),
    DownCause.CLIENT_ID: ("client id in use (326)", "client id in use"),
    DownCause.REJECTED: ("rejected by the Gateway (not a trusted IP?)", "connection rejected before the handshake"),
    DownCause.LIVE_ACCOUNT: ("a live account, refused (ibkr.allow_live is off)", "live account refused"),
    DownCause.OTHER: ("connection failed", "connection failing"),
}


class OutageCategory(StrEnum):
    """How /uptime splits down time."""

    SCHEDULED = "scheduled"
    RESTART = "restart"
    STOPPED = "stopped"  # the Gateway was stopped, or died: its port closed without a restart's reset
    RESET_CLOSED = "reset/closed"
    FROZEN = "frozen"
    IB_LINK = "IB link"
    NOT_LOGGED_IN = "not logged in"
    OTHER = "other"
    TEST = "test"  # a check stopped the Gateway on purpose: never counted as down time


class RecoveryHow(StrEnum):
    RECONNECTED = "reconnected"
    LINK_RESTORED = "link restored"


@dataclass(frozen=True)
class Recovery:
    how: RecoveryHow
    attempts: int = 0              # connection attempts it took (RECONNECTED)
    code: int | None = None        # 1101 / 1102 (LINK_RESTORED)


@dataclass(frozen=True)
class Incident:
    """One outage, from the first sign of trouble to the return, whatever was sent about it."""

    gateway: str
    started_at: datetime
    cause: DownCause                 # how it went down
    layer: Layer                     # the layer failing now
    current: DownCause               # what fails now (a reset, then the port refused, then not logged in)
    layer_since: datetime
    code: int | None = None          # 1100 / 2110 for an IB link loss
    port_closed: bool = False        # the port refused at some point: the Gateway process went away
    window: Occurrence | None = None  # it began inside this expected window
    test: str | None = None          # a check stopped the Gateway on purpose (its reason)
    alerted_at: datetime | None = None  # 🔴 sent (or due and muted away: see engine)
    noted: bool = False              # the quiet "expected" note was sent
    login_since: datetime | None = None  # API not ready after the port came back: a login screen
    login_alerted: bool = False
    needs_2fa: bool = False          # the login alert claimed a 2FA login (the schedule said one is due)
    acked_by: str | None = None
    acked_at: datetime | None = None
    restarted_by: str | None = None  # someone had IBC restart it from the alert (never gwbot by itself)
    restarted_at: datetime | None = None
    ended_at: datetime | None = None
    recovery: Recovery | None = None
    # The key's stamp: the start in ms, moved on where an earlier incident of this Gateway has it
    # (two within a millisecond, or the clock stepped back), so keys never repeat. 0: the start's.
    stamp: int = 0

    @property
    def key(self) -> str:
        """Stable, and unique per Gateway: 'paper@1764327723123'."""
        return f"{self.gateway}@{self.stamp or int(self.started_at.timestamp() * 1000)}"

    @property
    def ref(self) -> str:
        """The key in 11 characters whatever the Gateway's name: what a button's callback data
        carries (Telegram allows 64 bytes) and what storage finds the incident by."""
        digest = hashlib.blake2b(self.key.encode(), digest_size=8).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    @property
    def open(self) -> bool:
        return self.ended_at is None

    def duration(self, now: datetime) -> float:
        return ((self.ended_at or now) - self.started_at).total_seconds()

    @property
    def category(self) -> OutageCategory:
        """By cause; /uptime files the part inside an expected window as scheduled (or restart)."""
        if self.test:
            return OutageCategory.TEST
        if self.port_closed:
            # A real Gateway's restart resets its clients' sockets (RST); a stopped or killed one
            # closes them (FIN) or is simply not there (refused). Other first signs tell neither.
            stopped = self.cause in (DownCause.CLOSED, DownCause.REFUSED)
            return OutageCategory.STOPPED if stopped else OutageCategory.RESTART
        return {
            DownCause.CLOSED: OutageCategory.RESET_CLOSED,
            DownCause.RESET: OutageCategory.RESET_CLOSED,
            DownCause.FROZEN: OutageCategory.FROZEN,
            DownCause.NO_HANDSHAKE: OutageCategory.FROZEN,
            DownCause.IB_LINK: OutageCategory.IB_LINK,
            DownCause.NOT_LOGGED_IN: OutageCategory.NOT_LOGGED_IN,
            DownCause.REFUSED: OutageCategory.STOPPED,
        }.get(self.cause, OutageCategory.OTHER)

    def record(self) -> IncidentRecord:
        """As storage keeps it, for /uptime."""
        r = self.recovery
        recovery = None if r is None else f"{r.how} ({r.code})" if r.code else f"{r.how}, {r.attempts} attempt(s)"
        return IncidentRecord(self.key, self.gateway, self.started_at, self.ended_at, self.cause.value,
                              self.category.value, self.layer.label, self.window.label if self.window else None,
                              self.test, self.alerted_at is not None, self.acked_by, self.acked_at, recovery,
                              self.ref)


def gateway_ref(name: str) -> str:
    """A Gateway's name in 11 characters, for the buttons of alerts that have no incident (a farm's)."""
    digest = hashlib.blake2b(f"gateway {name}".encode(), digest_size=8).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


# ------------------------------------------------------------ observations
# What the watcher tells the engine; built from client events and connect failures.
@dataclass(frozen=True)
class WentDown:
    """Down, or while down a failed connection attempt: what fails now."""

    at: datetime
    cause: DownCause
    layer: Layer
    detail: str = ""
    code: int | None = None


@dataclass(frozen=True)
class CameBack:
    at: datetime
    recovery: Recovery


@dataclass(frozen=True)
class FarmState:
    """A data farm broken or OK since; observed as it changes (``since``: then)."""

    name: str
    ok: bool
    code: int
    since: datetime


Observation = WentDown | CameBack | FarmState


# ------------------------------------------------------------------ state
class Phase(StrEnum):
    STARTING = "starting"  # no verdict yet
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class Suppression:
    reason: str
    until: datetime


@dataclass(frozen=True)
class GatewayState:
    phase: Phase = Phase.STARTING
    since: datetime | None = None          # in this phase since
    failed: Layer | None = None            # the first layer not reached
    cause: DownCause | None = None         # what fails now
    detail: str = ""
    server_version: int | None = None
    accounts: tuple[str, ...] = ()
    link_ok: bool | None = None
    farms: tuple[FarmState, ...] = ()
    last_rtt: float | None = None
    incident: Incident | None = None

    def up(self, at: datetime, server_version: int | None = None, accounts: tuple[str, ...] = (), *,
           link_ok: bool | None) -> GatewayState:
        """Up; ``link_ok`` None: connected, and the Gateway has not said yet how its IB link is."""
        farms_failed = Layer.DATA_FARMS if any(not f.ok for f in self.farms) else None
        return replace(self, phase=Phase.UP, since=at if self.phase is not Phase.UP else self.since,
                       failed=farms_failed, cause=None, detail="", link_ok=link_ok,
                       server_version=server_version or self.server_version, accounts=accounts or self.accounts)

    def down(self, at: datetime, layer: Layer, cause: DownCause, detail: str = "") -> GatewayState:
        socket_gone = layer < Layer.IB_LINK  # farm notices come again with the next connection
        return replace(self, phase=Phase.DOWN, since=at if self.phase is not Phase.DOWN else self.since,
                       failed=layer, cause=cause, detail=detail, farms=() if socket_gone else self.farms,
                       link_ok=None if socket_gone else False if cause is DownCause.IB_LINK else self.link_ok)

    def farm(self, new: FarmState) -> GatewayState:
        old = {f.name: f for f in self.farms}
        prev = old.get(new.name)
        old[new.name] = replace(new, since=prev.since) if prev is not None and prev.ok == new.ok else new
        farms = tuple(sorted(old.values(), key=lambda f: f.name))
        failed = self.failed
        if self.phase is Phase.UP:
            failed = None if all(f.ok for f in farms) else Layer.DATA_FARMS
        return replace(self, farms=farms, failed=failed)
