"""What the watch tells people: typed alerts, and the one place that turns an alert into text.

The first line carries the verdict, because it is all a phone's lock screen shows:
``🔴 paper is DOWN — closed by the Gateway (TCP port refused since 10:02:03). Layer: TCP port.``
An alert with ``edit`` set is a new version of an earlier message about the same thing
(``message_key``): the sender edits that message instead of sending a new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from bot.watch.schedule import Occurrence
from bot.watch.state import DownCause, FarmState, Incident, RecoveryHow


class AlertKind(StrEnum):
    DOWN = "down"
    RECOVERED = "recovered"
    FARM_WARNING = "farm_warning"
    EXPECTED = "expected"
    REMINDER = "reminder"
    FLAPPING = "flapping"
    NEEDS_2FA = "needs_2fa"
    LOGIN_WAIT = "login_wait"  # waits at its login, nothing says a 2FA is due
    RELOGIN_REMINDER = "relogin_reminder"


class AlertAction(StrEnum):
    """Buttons the chat front end puts under an alert; the values fit in callback data."""

    ACKNOWLEDGE = "ack"
    MUTE_1H = "mute1h"
    RESTART = "restart"  # IBC RESTART, after a confirmation; only where the Gateway has ibc configured
    RECONNECT_DATA = "rdata"  # IBC RECONNECTDATA, likewise


# What a restart can cure: the process is there but its API does not answer, or is not ready.
RESTARTABLE = frozenset({DownCause.FROZEN, DownCause.NO_HANDSHAKE, DownCause.NOT_LOGGED_IN})


# Loud: a phone should ring (something needs a person). Quiet: for the record.
LOUD = frozenset({AlertKind.DOWN, AlertKind.REMINDER, AlertKind.FLAPPING, AlertKind.NEEDS_2FA,
                  AlertKind.LOGIN_WAIT, AlertKind.RELOGIN_REMINDER})


@dataclass(frozen=True)
class Alert:
    kind: AlertKind
    gateway: str
    at: datetime
    incident: Incident | None = None
    edit: bool = False                 # replaces the earlier message with the same message_key
    escalated: Occurrence | None = None  # DOWN because it was not back by this window's end + grace
    flaps: int = 0                     # FLAPPING: changes counted; RECOVERED/DOWN: changes while it flapped
    flap_window: float = 0.0
    quiet_for: float = 0.0             # FLAPPING: how long it must stay put before alerts resume
    farm: FarmState | None = None      # FARM_WARNING: the farm as it broke
    farm_ok_at: datetime | None = None  # FARM_WARNING edit: OK again since
    deadline: datetime | None = None   # NEEDS_2FA: end of IBC's 2FA wait; RELOGIN_REMINDER: token expiry
    tz: str = "UTC"                    # the zone people read times in
    remedied: tuple[str, datetime] | None = None  # FARM_WARNING: who had IBC reconnect the farms, and when

    @property
    def loud(self) -> bool:
        return self.kind in LOUD and not self.edit

    @property
    def message_key(self) -> str:
        """Which earlier message an edit replaces: one per kind and incident (or farm outage)."""
        if self.farm is not None:
            return f"{self.kind}:{self.gateway}:{self.farm.name}@{int(self.farm.since.timestamp())}"
        if self.incident is not None:
            return f"{self.kind}:{self.incident.key}"
        return f"{self.kind}:{self.gateway}@{int(self.at.timestamp())}"

    @property
    def actions(self) -> tuple[AlertAction, ...]:
        inc = self.incident
        if inc is None:
            return ()
        if self.kind is AlertKind.FLAPPING:
            return (AlertAction.MUTE_1H,)
        if self.kind in (AlertKind.DOWN, AlertKind.REMINDER, AlertKind.NEEDS_2FA, AlertKind.LOGIN_WAIT) \
                and inc.open and inc.acked_by is None:
            return AlertAction.ACKNOWLEDGE, AlertAction.MUTE_1H
        return ()

    @property
    def remedy(self) -> AlertAction | None:
        """What IBC could do about it, offered beside [Acknowledge] where IBC is configured: a restart
        for a Gateway frozen or not ready (once per outage), nothing for one that is simply gone."""
        inc = self.incident
        if self.kind in (AlertKind.DOWN, AlertKind.REMINDER) and inc is not None and inc.open \
                and inc.restarted_by is None and inc.current in RESTARTABLE:
            return AlertAction.RESTART
        if self.kind is AlertKind.FARM_WARNING and self.farm_ok_at is None and self.remedied is None:
            return AlertAction.RECONNECT_DATA
        return None

    @property
    def text(self) -> str:
        return render(self)


# ----------------------------------------------------------------- words
def duration(seconds: float) -> str:
    """'40 s', '1 min 34 s', '15 min', '2 h 5 min', '3 d 4 h'."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 10:
        return f"{m} min {s} s" if s else f"{m} min"
    if m < 60:
        return f"{m} min"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(h, 24)
    return f"{d} d {h} h" if h else f"{d} d"


def clock(at: datetime, tz: str) -> str:
    return at.astimezone(ZoneInfo(tz) if tz != "UTC" else UTC).strftime("%H:%M:%S")


def _cause(inc: Incident) -> str:
    return inc.cause.words + (f" ({inc.code})" if inc.cause is DownCause.IB_LINK and inc.code else "")


def _now_failing(inc: Incident, tz: str) -> str:
    """'closed by the Gateway (TCP port refused since 10:02:03)'."""
    if inc.current is inc.cause:
        return f"{_cause(inc)} since {clock(inc.started_at, tz)}"
    return f"{_cause(inc)} ({inc.current.now_words} since {clock(inc.layer_since, tz)})"


def _how(inc: Incident) -> str:
    r = inc.recovery
    if r is None:
        return "back"
    if r.how is RecoveryHow.RECONNECTED:
        return f"reconnected ({r.attempts} attempt{'s' if r.attempts != 1 else ''})"
    match r.code:
        case 1102:
            return f"IB link restored, data kept ({r.code})"
        case 1101:
            return f"IB link restored, subscriptions lost — resubscribe ({r.code})"
    return "IB link restored"


def _acked(inc: Incident | None, tz: str) -> str:
    if inc is None or inc.acked_by is None or inc.acked_at is None:
        return ""
    return f"\n✋ Taken by {inc.acked_by} at {clock(inc.acked_at, tz)}."


def _restarted(inc: Incident | None, tz: str) -> str:
    if inc is None or inc.restarted_by is None or inc.restarted_at is None:
        return ""
    return f"\n🔄 Restarted through IBC by {inc.restarted_by} at {clock(inc.restarted_at, tz)}."


def _reconnected(alert: Alert, tz: str) -> str:
    return f", reconnected by {alert.remedied[0]}" if alert.remedied is not None else ""


def render(alert: Alert) -> str:
    """The text of an alert: the ONE place that words them."""
    gw, tz, inc, at = alert.gateway, alert.tz, alert.incident, alert.at
    match alert.kind:
        case AlertKind.DOWN if inc is not None:
            text = f"🔴 {gw} is DOWN — {_now_failing(inc, tz)}. Layer: {inc.layer.label}."
            if alert.escalated is not None:
                text += f" Not back after the {alert.escalated.label} ended."
            if alert.flaps:
                text += f" It flapped {alert.flaps} times before staying down."
            return text + _acked(inc, tz) + _restarted(inc, tz)
        case AlertKind.NEEDS_2FA if inc is not None and alert.deadline is not None:
            since = inc.login_since or inc.layer_since
            timeout = duration((alert.deadline - since).total_seconds())
            text = (f"🔐 {gw} needs a 2FA login — the Gateway restarted after the weekly token expiry and "
                    f"waits at its login (API not ready since {clock(since, tz)}).")
            if alert.deadline > at:
                text += (f" Approve it on IBKR Mobile within {duration((alert.deadline - at).total_seconds())} "
                         f"(by {clock(alert.deadline, tz)}; IBC waits {timeout}).")
            else:
                text += (f" IBC's {timeout} for the 2FA ran out at {clock(alert.deadline, tz)}: "
                         "log in on the Gateway by hand.")
            return text + _acked(inc, tz)
        case AlertKind.LOGIN_WAIT if inc is not None:
            since = inc.login_since or inc.layer_since
            return (f"🔐 {gw} waits at its login — the Gateway restarted and its API is not ready since "
                    f"{clock(since, tz)} ({duration((at - since).total_seconds())}): a login screen or a dialog "
                    "waits on the Gateway." + _acked(inc, tz))
        case AlertKind.REMINDER if inc is not None:
            return (f"⏰ {gw} still down for {duration(inc.duration(at))} — {_now_failing(inc, tz)}. "
                    f"Layer: {inc.layer.label}.")
        case AlertKind.RECOVERED if inc is not None:
            text = f"🟢 {gw} is back after {duration(inc.duration(at))} — {_how(inc)}"
            text += f", restarted by {inc.restarted_by}." if inc.restarted_by else "."
            if alert.flaps:
                text += f" Stable again after {alert.flaps} changes."
            if inc.acked_by:
                text += f" {inc.acked_by} had taken it."
            return text
        case AlertKind.EXPECTED if inc is not None and inc.window is not None:
            text = f"🟡 {gw}: {_cause(inc)} inside the {inc.window.label} — expected."
            if not inc.open:
                text += f" Back after {duration(inc.duration(at))}, {_how(inc)}."
            return text
        case AlertKind.FLAPPING:
            last = f" (last: {_cause(inc)})" if inc is not None else ""
            return (f"🟠 {gw} is flapping — {alert.flaps} drops and returns within {duration(alert.flap_window)}"
                    f"{last}. Quiet until it stays up or down for {duration(alert.quiet_for)}.")
        case AlertKind.FARM_WARNING if alert.farm is not None:
            f = alert.farm
            if alert.farm_ok_at is not None:
                return (f"🟡 {gw}: data farm {f.name} was broken for "
                        f"{duration((alert.farm_ok_at - f.since).total_seconds())} ({f.code}); "
                        f"OK again since {clock(alert.farm_ok_at, tz)}{_reconnected(alert, tz)}.")
            text = f"🟡 {gw}: data farm {f.name} broken for {duration((at - f.since).total_seconds())} ({f.code})."
            if alert.remedied is not None:
                by, when = alert.remedied
                text += f"\n🔄 Data farms reconnected through IBC by {by} at {clock(when, tz)}."
            return text
        case AlertKind.RELOGIN_REMINDER if alert.deadline is not None:
            ny = alert.deadline.astimezone(ZoneInfo("America/New_York"))
            return (f"🔑 {gw}: the weekly IBKR login is due — the Gateway's tokens expire "
                    f"{ny.strftime('%a %H:%M')} {ny.tzname()} (in {duration((alert.deadline - at).total_seconds())}). "
                    "Someone must approve a 2FA login then.")
    return f"{gw}: {alert.kind}"
