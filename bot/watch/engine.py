"""The decision engine: observations in, alerts out. Pure, one per Gateway, driven by a clock.

Nothing here sleeps, connects or sends: the watcher feeds it observations (``observe``) and calls
``tick`` at ``next_due()`` (a monotonic reading); tests pass a fake clock and step through hours in
microseconds. Durations and due times run on the monotonic clock; wall time only names moments for
people and finds IBKR's windows (see clock.py).

Rules:
- a drop shorter than ``down_after`` sends nothing (debounce); after it, one loud 🔴;
- more than ``flap_count`` changes within ``flap_window`` is flapping: one summary, then quiet
  until it has stayed up or down for ``flap_quiet`` (then one 🔴, or one 🟢 "stable again");
- ⏰ reminders every ``remind_every`` until acknowledged; acknowledging edits the 🔴 to say
  who took it; so does a restart someone had IBC do from the alert (``restarted``), which the 🟢
  repeats; a recovery closes the incident, so the next one needs a new acknowledgement;
- muted: nothing is sent; what is still true when the mute ends is sent then;
- inside an expected window a drop is one quiet 🟡 note, a 🔴 only if it is not back by the
  window's end + ``grace``; its return edits the note (one message per expected outage);
- a check's deliberate stop (``suppress``) sends nothing; still down when it is lifted, the
  debounce starts from then;
- after the port came back with the API not ready (a login screen) for ``login_settle``, a loud 🔐;
  it claims a 2FA login, with IBC's countdown and a quiet edit when that ran out, only when the
  schedule says so (a weekly token expiry since the Gateway last came up), else it says what is
  known: the Gateway waits at its login;
- a farm broken longer than ``farm_grace`` is a quiet 🟡, edited when it is OK again;
- the weekly re-login reminder ``relogin_reminder`` before Sunday 01:00 New York time (at once
  when gwbot starts inside that lead, never twice for one expiry);
- what people set and the open outage survive a restart of gwbot (``remembered``, memory.py).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from bot.config import WatchConfig
from bot.ibkr.errors import Layer
from bot.watch.alerts import Alert, AlertKind
from bot.watch.clock import Clock, mono_of, wall_of
from bot.watch.memory import Remembered
from bot.watch.schedule import Schedule
from bot.watch.state import (
    CameBack,
    DownCause,
    FarmState,
    Incident,
    Observation,
    Suppression,
    WentDown,
)


@dataclass
class _Farm:
    broken: FarmState
    since: float  # monotonic
    judged: bool = False  # its grace ran out (warned, or not worth a word then)
    warned: bool = False  # the 🟡 went out: its "OK again" is an edit of that message
    reconnect_by: tuple[str, datetime] | None = None  # someone had IBC reconnect the farms (who, when)


class Engine:
    def __init__(self, gateway: str, settings: WatchConfig, clock: Clock,
                 remembered: Remembered | None = None) -> None:
        self.gateway = gateway
        self.settings = settings
        self.schedule = settings.schedule
        self.clock = clock
        self.log = logging.getLogger(f"gwbot.watch.{gateway}")
        self.incident: Incident | None = None
        self.last_incident: Incident | None = None  # the latest closed one
        self.muted_until: datetime | None = None  # as people read it; the monotonic end is _mute_end
        self.suppression: Suppression | None = None
        self.flapping = False
        self.up_since: datetime | None = None  # when the Gateway last came up
        self._mute_end: float | None = None
        self._suppress_end: float | None = None
        self._changes: deque[float] = deque()
        self._last_change: float | None = None
        self._flap_changes = 0
        self._debounce_from: float | None = None
        self._reminded_at: float | None = None
        self._login_at: float | None = None  # the open incident's login_since, monotonic
        self._login_expired_sent = False
        self._relogin_sent_for: datetime | None = None
        self._last_stamp = 0  # the newest incident's key stamp
        self._farms: dict[str, _Farm] = {}
        self._updates: list[Incident] = []
        self._changed = False
        if remembered is not None:
            self._recall(remembered)

    # ------------------------------------------------------------ inputs
    def observe(self, obs: Observation) -> list[Alert]:
        match obs:
            case WentDown() if self.incident is None:
                return self._went_down(obs) + self.tick()
            case WentDown():
                self._still_down(obs.at, obs.cause, obs.layer)
                return self.tick()
            case CameBack():
                self.up_since = obs.at
                self._changed = True
                return self._came_back(obs) + self.tick()
            case FarmState():
                return self._farm(obs) + self.tick()
        return []

    def acknowledge(self, by: str, key: str | None = None) -> list[Alert]:
        """Someone took the current outage: reminders stop, the 🔴 (and 🔐) are edited to say who.
        ``key`` (from the button) must name the current incident; a stale button does nothing."""
        inc = self.incident
        if inc is None or inc.acked_by is not None or (key is not None and key != inc.key):
            return []
        inc = self._set(replace(inc, acked_by=by, acked_at=self.clock.wall()))
        self.log.info("outage since %s acknowledged by %s", inc.started_at.isoformat(), by)
        out = []
        if inc.alerted_at is not None:
            out.append(self._alert(AlertKind.DOWN, inc, edit=True))
        if inc.login_alerted:
            out.append(self._login_alert(inc, edit=True))
        return out

    def restarted(self, by: str, key: str) -> list[Alert]:
        """Someone had IBC restart the Gateway of outage ``key`` (from its 🔴): the 🔴 is edited to say
        who and when, and the 🟢 will say it. gwbot itself never restarts anything."""
        inc = self.incident
        if inc is None or inc.key != key:
            return []
        inc = self._set(replace(inc, restarted_by=by, restarted_at=self.clock.wall()))
        self.log.info("outage since %s: restart through IBC asked by %s", inc.started_at.isoformat(), by)
        return [self._alert(AlertKind.DOWN, inc, edit=True)] if inc.alerted_at is not None else []

    def farms_reconnected(self, by: str) -> list[Alert]:
        """Someone had IBC reconnect the data farms from a farm's 🟡: each warned one is edited to say so."""
        out = []
        for farm in self._farms.values():
            if farm.warned and farm.reconnect_by is None:
                farm.reconnect_by = (by, self.clock.wall())
                out.append(self._alert(AlertKind.FARM_WARNING, farm=farm.broken, edit=True, remedied=farm.reconnect_by))
        return out

    def broken_farms(self) -> list[str]:
        """The farms whose 🟡 went out and that are still broken."""
        return [name for name, farm in self._farms.items() if farm.warned]

    def mute(self, until: datetime | None) -> list[Alert]:
        """Send nothing until ``until`` (None: unmute); whatever is still true then is sent then."""
        self.muted_until = until
        self._mute_end = None if until is None else mono_of(self.clock, until)
        self._changed = True
        return self.tick()

    def suppress(self, reason: str, until: datetime | None) -> list[Alert]:
        """A check stops the Gateway on purpose: what happens until ``until`` is not an outage.
        None lifts it; a Gateway still down then is debounced from that moment."""
        # Lifting is an expiry now, so a test-marked outage still running becomes a real one.
        self.suppression = Suppression(reason, until or self.clock.wall())
        self._suppress_end = self.clock.mono() if until is None else mono_of(self.clock, until)
        return self.tick()

    def take_updates(self) -> list[Incident]:
        """Incidents opened, changed or closed since the last call, oldest first (for storage)."""
        out, self._updates = self._updates, []
        return out

    def take_remembered(self) -> Remembered | None:
        """What must survive a restart, when it changed since the last call (None: unchanged)."""
        if not self._changed:
            return None
        self._changed = False
        wall = self._wall
        return Remembered(self.incident, self.muted_until if self._mute_end is not None else None,
                          wall(self._debounce_from), wall(self._reminded_at), self._login_expired_sent,
                          self._relogin_sent_for, self.up_since, self._last_stamp)

    # ------------------------------------------------------------- time
    def tick(self) -> list[Alert]:
        now = self.clock.mono()
        self._expire(now)
        out: list[Alert] = []
        out += self._settle_flapping(now)
        if self.incident is not None:
            out += self._outage(now, self.incident)
        out += self._farm_warnings(now)
        out += self._relogin_reminder(now)
        return out

    def next_due(self) -> float | None:
        """When ``tick`` has something to decide next, a monotonic reading (None: only a new
        observation can change anything)."""
        now = self.clock.mono()
        times: list[float] = []
        if self._mute_end is not None:
            times.append(self._mute_end)
        if self._suppress_end is not None:
            times.append(self._suppress_end)
        if self.flapping and self._last_change is not None:
            times.append(self._last_change + self.settings.flap_quiet)
        if not self._muted(now):
            times += [at for at, _ in self._outage_steps(self.incident)] if self.incident is not None else []
            times += [f.since + self.settings.farm_grace for f in self._farms.values() if not f.judged]
            if (relogin := self._relogin_due()) is not None:
                times.append(mono_of(self.clock, relogin[0]))
        return min(times) if times else None

    # -------------------------------------------------------- internals
    def _wall(self, mono: float | None) -> datetime | None:
        return None if mono is None else wall_of(self.clock, mono)

    def _mono(self, at: datetime | None) -> float | None:
        return None if at is None else mono_of(self.clock, at)

    def _recall(self, r: Remembered) -> None:
        """Start where the last gwbot left off: the same outage, its acknowledgement, the mute."""
        now = self.clock.mono()
        self.up_since = r.up_since
        self._relogin_sent_for = r.relogin_sent_for
        self._last_stamp = max(r.last_stamp, r.incident.stamp if r.incident is not None else 0)
        if r.muted_until is not None and r.muted_until > self.clock.wall():
            self.muted_until, self._mute_end = r.muted_until, mono_of(self.clock, r.muted_until)
        inc = r.incident
        if inc is None or not inc.open:
            return
        self._debounce_from, self._reminded_at = self._mono(r.debounce_from), self._mono(r.reminded_at)
        self._login_at, self._login_expired_sent = self._mono(inc.login_since), r.login_expired_sent
        if inc.test is not None:
            # The check that stopped it went away with the last gwbot: from now on it is an outage.
            inc, self._debounce_from = replace(inc, test=None), now
        self.incident = inc
        self._updates.append(inc)
        self.log.info("still the outage since %s (remembered from the last run)", inc.started_at.isoformat())

    def _muted(self, now: float) -> bool:
        return self._mute_end is not None and now < self._mute_end

    def _alert(self, kind: AlertKind, inc: Incident | None = None, **fields: object) -> Alert:
        return Alert(kind, self.gateway, self.clock.wall(), inc, tz=self.settings.time_zone, **fields)  # type: ignore[arg-type]

    def _set(self, inc: Incident) -> Incident:
        if inc != self.incident:
            self._updates.append(inc)
            self._changed = True
        self.incident = inc if inc.open else None
        return inc

    def _expire(self, now: float) -> None:
        if self._mute_end is not None and now >= self._mute_end:
            self.muted_until = self._mute_end = None
            self._changed = True
        if self._suppress_end is not None and now >= self._suppress_end:
            self.suppression = self._suppress_end = None
            if self.incident is not None and self.incident.test:
                # Still down after the check let go: debounced from now like any outage. It keeps the
                # check's name unless it outlasts the debounce (our own client may just rejoin later
                # than the check's did).
                self._debounce_from = now

    def _change(self, now: float, counted: bool) -> None:
        """One change (down or up), for flap detection; windows and checks' stops do not count."""
        if not counted:
            return
        self._changes.append(now)
        while self._changes and self._changes[0] <= now - self.settings.flap_window:
            self._changes.popleft()
        self._last_change = now
        if self.flapping:
            self._flap_changes += 1

    def _flap_alerts(self) -> list[Alert]:
        if self.flapping or len(self._changes) <= self.settings.flap_count:
            return []
        self.flapping = True
        self._flap_changes = len(self._changes)
        self.log.warning("flapping: %d changes within %.0f s", len(self._changes), self.settings.flap_window)
        if self._muted(self.clock.mono()):
            return []
        return [self._alert(AlertKind.FLAPPING, self.incident or self.last_incident, flaps=len(self._changes),
                            flap_window=self.settings.flap_window, quiet_for=self.settings.flap_quiet)]

    def _went_down(self, obs: WentDown) -> list[Alert]:
        now = self.clock.mono()
        test = self.suppression.reason if self.suppression is not None and self._suppress_end is not None \
            and now < self._suppress_end else None  # a check stops it on purpose
        window = self.schedule.window_at(obs.at)
        self._change(now, counted=window is None and test is None)
        self._last_stamp = max(int(obs.at.timestamp() * 1000), self._last_stamp + 1)
        inc = Incident(self.gateway, obs.at, obs.cause, obs.layer, obs.cause, obs.at, code=obs.code,
                       port_closed=obs.cause is DownCause.REFUSED, window=window, test=test, stamp=self._last_stamp)
        self._set(inc)
        self._debounce_from = now
        self._reminded_at = self._login_at = None
        self._login_expired_sent = False
        self.log.info("down: %s (%s)%s%s", obs.cause.words, obs.layer.label, f" — {obs.detail}" if obs.detail else "",
                      f" inside the {window.label}" if window else "")
        return self._flap_alerts()

    def _still_down(self, at: datetime, cause: DownCause, layer: Layer) -> None:
        inc = self.incident
        assert inc is not None
        changed = cause is not inc.current or layer is not inc.layer
        port_closed = inc.port_closed or cause is DownCause.REFUSED
        login_since = inc.login_since
        if cause is DownCause.NOT_LOGGED_IN and port_closed:
            if login_since is None:  # the Gateway came back to its login screen
                login_since, self._login_at = at, self.clock.mono()
        elif cause is not DownCause.NOT_LOGGED_IN:
            login_since = self._login_at = None
        self._set(replace(inc, current=cause, layer=layer, layer_since=at if changed else inc.layer_since,
                          port_closed=port_closed, login_since=login_since))
        if changed:
            self.log.info("still down: %s (%s)", cause.now_words, layer.label)

    def _came_back(self, obs: CameBack) -> list[Alert]:
        inc = self.incident
        if inc is None:
            return []
        now = self.clock.mono()
        self._change(now, counted=inc.window is None and inc.test is None)
        inc = self._set(replace(inc, ended_at=obs.at, recovery=obs.recovery))
        self.last_incident = inc
        self.log.info("back after %.1f s (%s)", inc.duration(obs.at), obs.recovery.how)
        out = self._flap_alerts()
        if self.flapping or self._muted(now):
            return out
        if inc.alerted_at is not None:
            out.append(self._alert(AlertKind.RECOVERED, inc))
        elif inc.noted:
            out.append(self._alert(AlertKind.EXPECTED, inc, edit=True))
        return out

    def _settle_flapping(self, now: float) -> list[Alert]:
        if not self.flapping or self._last_change is None or now < self._last_change + self.settings.flap_quiet:
            return []
        self.flapping = False
        flaps, self._flap_changes = self._flap_changes, 0
        self._changes.clear()
        self.log.info("flapping over after %d changes", flaps)
        inc = self.incident
        if inc is not None and (inc.test is not None or inc.window is not None):
            # A check's stop or an expected window: its own rules (silence, the 🟡 note) decide.
            self._debounce_from = now
            return []
        if self._muted(now):
            return []
        if inc is not None:
            inc = self._set(replace(inc, alerted_at=self.clock.wall()))
            self._reminded_at = now
            return [self._alert(AlertKind.DOWN, inc, flaps=flaps)]
        return [self._alert(AlertKind.RECOVERED, self.last_incident, flaps=flaps)] if self.last_incident else []

    def _needs_2fa(self, inc: Incident) -> bool:
        """The schedule says a 2FA login is due: a weekly token expiry passed since the Gateway
        last came up (its session predates it). Nothing else in the API says so."""
        if inc.login_since is None or self.up_since is None:
            return False
        expiry = Schedule.next_relogin(inc.login_since - timedelta(days=7))
        return self.up_since < expiry <= inc.login_since

    def _login_deadline(self, inc: Incident) -> datetime | None:
        if not inc.needs_2fa or inc.login_since is None:
            return None
        return inc.login_since + timedelta(seconds=self.settings.login_timeout)

    def _login_alert(self, inc: Incident, edit: bool = False) -> Alert:
        kind = AlertKind.NEEDS_2FA if inc.needs_2fa else AlertKind.LOGIN_WAIT
        return self._alert(kind, inc, edit=edit, deadline=self._login_deadline(inc))

    def _outage_steps(self, inc: Incident) -> list[tuple[float, str]]:
        """The open incident's timed decisions, (when, which), in the order ``_outage`` takes them."""
        if inc.test is not None and self.suppression is not None:
            return []  # the suppression's end is already a due time
        steps = []
        if inc.alerted_at is None and inc.window is not None:
            steps.append((mono_of(self.clock, self.schedule.escalate_at(inc.window)), "down"))
            if not inc.noted:
                steps.append((mono_of(self.clock, inc.started_at) + self.settings.down_after, "note"))
        elif inc.alerted_at is None and not self.flapping and self._debounce_from is not None:
            steps.append((self._debounce_from + self.settings.down_after, "down"))
        elif inc.alerted_at is not None and inc.acked_by is None and self._reminded_at is not None:
            steps.append((self._reminded_at + self.settings.remind_every, "remind"))
        if self._login_at is not None and not inc.login_alerted:
            steps.append((self._login_at + max(self.settings.down_after, self.settings.login_settle), "login"))
        elif inc.login_alerted and inc.needs_2fa and not self._login_expired_sent and self._login_at is not None:
            steps.append((self._login_at + self.settings.login_timeout, "login expired"))
        return steps

    def _outage(self, now: float, inc: Incident) -> list[Alert]:
        if self._muted(now):
            return []
        out: list[Alert] = []
        for step in [step for at, step in self._outage_steps(inc) if now >= at]:
            match step:
                case "down":  # after the debounce, or not back by the end of its expected window + grace
                    inc = self._set(replace(inc, alerted_at=self.clock.wall(), test=None))
                    self._reminded_at = now
                    if inc.window is None:
                        self.log.warning("DOWN: %s", inc.cause.words)
                    out.append(self._alert(AlertKind.DOWN, inc, escalated=inc.window))
                case "note" if inc.alerted_at is None:
                    inc = self._set(replace(inc, noted=True))
                    out.append(self._alert(AlertKind.EXPECTED, inc))
                case "remind":
                    self._reminded_at = now
                    self._changed = True
                    out.append(self._alert(AlertKind.REMINDER, inc))
                case "login":
                    inc = self._set(replace(inc, login_alerted=True, needs_2fa=self._needs_2fa(inc)))
                    out.append(self._login_alert(inc))
                case "login expired":
                    self._login_expired_sent = self._changed = True
                    out.append(self._login_alert(inc, edit=True))
        return out

    def _farm(self, obs: FarmState) -> list[Alert]:
        farm = self._farms.get(obs.name)
        if not obs.ok:
            if farm is None:
                self._farms[obs.name] = _Farm(obs, self.clock.mono())
            return []
        if farm is None:
            return []
        del self._farms[obs.name]
        if farm.warned and not self._muted(self.clock.mono()):
            return [self._alert(AlertKind.FARM_WARNING, farm=farm.broken, farm_ok_at=obs.since, edit=True,
                                remedied=farm.reconnect_by)]
        return []

    def _farm_warnings(self, now: float) -> list[Alert]:
        out = []
        for farm in self._farms.values():
            if farm.judged or now < farm.since + self.settings.farm_grace or self._muted(now):
                continue
            farm.judged = True
            # During an outage or a reset window farms are down with everything else: no news.
            if self.incident is None and self.schedule.window_at(farm.broken.since) is None:
                farm.warned = True
                out.append(self._alert(AlertKind.FARM_WARNING, farm=farm.broken))
        return out

    def _relogin_due(self) -> tuple[datetime, datetime] | None:
        """(when to remind, the token expiry it is about) of the next weekly reminder not yet sent."""
        lead = self.schedule.relogin_reminder
        if lead <= 0:
            return None
        expiry = Schedule.next_relogin(self.clock.wall())
        if expiry == self._relogin_sent_for:
            expiry = Schedule.next_relogin(expiry)
        return expiry - timedelta(seconds=lead), expiry

    def _relogin_reminder(self, now: float) -> list[Alert]:
        due = self._relogin_due()
        if due is None or self.clock.wall() < due[0] or self._muted(now):
            return []  # muted: sent when the mute ends, if that is still before the expiry
        self._relogin_sent_for = due[1]
        self._changed = True
        return [self._alert(AlertKind.RELOGIN_REMINDER, deadline=due[1])]
