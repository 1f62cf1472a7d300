"""What the watch remembers across a restart of gwbot: the open outage (with who took it), a mute,
the reminder times and the weekly reminder already sent.

People act on an alert (acknowledge, mute) and expect it to hold; a restart in the middle of an
outage is not a new outage. The engine hands out a :class:`Remembered` whenever any of it
changes, the watcher stores it as JSON, and the next engine for that Gateway starts from it.
Times are wall-clock UTC here: a monotonic reading means nothing to the next process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

from bot.ibkr.errors import Layer
from bot.watch.schedule import Schedule
from bot.watch.state import DownCause, Incident

# Incident fields not stored: an open incident has no end or recovery, and its window is found
# again from the schedule (``in_window``), so a changed config is read as it is now.
_NOT_STORED = ("window", "ended_at", "recovery")
_DECODE: dict[str, Any] = {"cause": DownCause, "current": DownCause, "layer": Layer}


@dataclass(frozen=True)
class Remembered:
    incident: Incident | None = None   # the open outage, acknowledgement included
    muted_until: datetime | None = None
    debounce_from: datetime | None = None  # when the debounce of the open outage started
    reminded_at: datetime | None = None    # the last 🔴 or ⏰ of the open outage
    login_expired_sent: bool = False
    relogin_sent_for: datetime | None = None  # the weekly token expiry the last 🔑 was about
    up_since: datetime | None = None       # the start of the last span the Gateway was up
    last_stamp: int = 0                    # the newest incident key's stamp: keys never repeat


def _value(v: object) -> object:
    return v.isoformat() if isinstance(v, datetime) else v


def _time(v: object) -> datetime | None:
    return datetime.fromisoformat(v) if isinstance(v, str) else None


def _incident_json(inc: Incident) -> dict[str, object]:
    out = {f.name: _value(getattr(inc, f.name)) for f in fields(inc) if f.name not in _NOT_STORED}
    return out | {"in_window": inc.window is not None}


def _incident(data: dict[str, Any], schedule: Schedule) -> Incident:
    values: dict[str, Any] = {}
    for f in fields(Incident):
        if f.name in _NOT_STORED or f.name not in data:
            continue
        v = data[f.name]
        values[f.name] = _DECODE[f.name](v) if f.name in _DECODE else _time(v) if f.name.endswith(("_at", "_since")) \
            else v
    inc = Incident(**values)
    return replace(inc, window=schedule.window_at(inc.started_at)) if data.get("in_window") else inc


def to_json(r: Remembered) -> str:
    data = {f.name: _value(getattr(r, f.name)) for f in fields(r)}
    data["incident"] = _incident_json(r.incident) if r.incident is not None else None
    return json.dumps(data, sort_keys=True)


def from_json(text: str, schedule: Schedule) -> Remembered:
    """What was stored; ValueError (or KeyError/TypeError) when it is not that."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    inc = data.get("incident")
    return Remembered(
        incident=_incident(inc, schedule) if isinstance(inc, dict) else None,
        muted_until=_time(data.get("muted_until")), debounce_from=_time(data.get("debounce_from")),
        reminded_at=_time(data.get("reminded_at")), login_expired_sent=bool(data.get("login_expired_sent")),
        relogin_sent_for=_time(data.get("relogin_sent_for")), up_since=_time(data.get("up_since")),
        last_stamp=int(data.get("last_stamp") or 0))
