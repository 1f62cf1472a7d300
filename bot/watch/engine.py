"""The decision engine: observations in, alerts out. Pure, one per Gateway, driven by a clock.

Nothing here sleeps, connects or sends: the watcher feeds it observations (``observe``) and calls
``tick`` at ``next_due()``; tests pass a fake clock and step through hours in microseconds.

Rules (issue 11):
- a drop shorter than ``down_after`` sends nothing (debounce); after it, one loud 🔴;
- more than ``flap_count`` changes within ``flap_window`` is flapping: one summary, then quiet
  until it has stayed up or down for ``flap_quiet`` (then one 🔴, or one 🟢 "stable again");
- ⏰ reminders every ``remind_every`` until acknowledged; acknowledging edits the 🔴 to say
  who took it; a recovery closes the incident, so the next one needs a new acknowledgement;
- muted: nothing is sent; what is still true when the mute ends is sent then;
- inside an expected window a drop is one quiet 🟡 note, a 🔴 only if it is not back by the
  window's end + ``grace``; its return edits the note (one message per expected outage);
- a check's deliberate stop (``suppress``) sends nothing; still down when it is lifted, the
  debounce starts from then;
- after the port came back with the API not ready (a login screen), a loud 🔐 with IBC's 2FA
  countdown; a quiet edit when the countdown ran out;
- a farm broken longer than ``farm_grace`` is a quiet 🟡, edited when it is OK again;
- the weekly re-login reminder ``relogin_reminder`` before Sunday 01:00 New York time.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from bot.config import WatchConfig
from bot.ibkr.errors import Layer
from bot.watch.alerts import Alert, AlertKind
from bot.watch.state import (
    CameBack,
    DownCause,
    FarmState,
    Incident,
    Observation,
    Suppression,
    WentDown,
)

Clock = Callable[[], datetime]
# Right after a restart the API can stay "not ready" for seconds while it initialises; inside an
# expected window (where restarts happen) give it this long before calling it a login screen.
LOGIN_SETTLE_IN_WINDOW = 30.0


@dataclass
class _Farm:
    broken: FarmState
    warned: bool = False


class Engine:
    def __init__(self, gateway: str, settings: WatchConfig, clock: Clock) -> None:
        self.gateway = gateway
        self.settings = settings
        self.schedule = settings.schedule
        self.clock = clock
        self.log = logging.getLogger(f"gwbot.watch.{gateway}")
        self.incident: Incident | None = None
        self.last_incident: Incident | None = None  # the latest closed one
        self.muted_until: datetime | None = None
        self.suppression: Suppression | None = None
        self.flapping = False
        self._changes: deque[datetime] = deque()
        self._last_change: datetime | None = None
        self._flap_changes = 0
        self._debounce_from: datetime | None = None
        self._reminded_at: datetime | None = None
        self._login_expired_sent = False
        self._farms: dict[str, _Farm] = {}
        self._relogin = self.schedule.next_relogin_reminder(clock())
        self._updates: list[Incident] = []

    # ------------------------------------------------------------ inputs
    def observe(self, obs: Observation) -> list[Alert]:
        match obs:
            case WentDown() if self.incident is None:
                return self._went_down(obs) + self.tick()
            case WentDown():
                self._still_down(obs.at, obs.cause, obs.layer)
                return self.tick()
            case CameBack():
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
        inc = self._set(replace(inc, acked_by=by, acked_at=self.clock()))
        self.log.info("outage since %s acknowledged by %s", inc.started_at.isoformat(), by)
        out = []
        if inc.alerted_at is not None:
            out.append(self._alert(AlertKind.DOWN, inc, edit=True))
        if inc.login_alerted:
            out.append(self._alert(AlertKind.NEEDS_2FA, inc, edit=True, deadline=self._login_deadline(inc)))
        return out

    def mute(self, until: datetime | None) -> list[Alert]:
        """Send nothing until ``until`` (None: unmute); whatever is still true then is sent then."""
        self.muted_until = until
        return self.tick()

    def suppress(self, reason: str, until: datetime | None) -> list[Alert]:
        """A check stops the Gateway on purpose: what happens until ``until`` is not an outage.
        None lifts it; a Gateway still down then is debounced from that moment."""
        # Lifting is an expiry now, so a test-marked outage still running becomes a real one.
        self.suppression = Suppression(reason, until or self.clock())
        return self.tick()

    def take_updates(self) -> list[Incident]:
        """Incidents opened, changed or closed since the last call, oldest first (for storage)."""
        out, self._updates = self._updates, []
        return out

    # ------------------------------------------------------------- time
    def tick(self) -> list[Alert]:
        now = self.clock()
        self._expire(now)
        out: list[Alert] = []
        out += self._settle_flapping(now)
        if self.incident is not None:
            out += self._outage(now, self.incident)
        out += self._farm_warnings(now)
        out += self._relogin_reminder(now)
        return out

    def next_due(self) -> datetime | None:
        """When ``tick`` has something to decide next (None: only a new observation can change anything)."""
        now = self.clock()
        times: list[datetime] = []
        if self.muted_until is not None:
            times.append(self.muted_until)
        if self.suppression is not None:
            times.append(self.suppression.until)
        if self.flapping and self._last_change is not None:
            times.append(self._last_change + self._s(self.settings.flap_quiet))
        if self._relogin is not None:
            times.append(self._relogin[0])
        if not self._muted(now):
            times += [at for at, _ in self._outage_steps(self.incident)] if self.incident is not None else []
            times += [f.broken.since + self._s(self.settings.farm_grace) for f in self._farms.values() if not f.warned]
        return min(times) if times else None

    # -------------------------------------------------------- internals
    @staticmethod
    def _s(seconds: float) -> timedelta:
        return timedelta(seconds=seconds)

    def _muted(self, now: datetime) -> bool:
        return self.muted_until is not None and now < self.muted_until

    def _alert(self, kind: AlertKind, inc: Incident | None = None, **fields: object) -> Alert:
        return Alert(kind, self.gateway, self.clock(), inc, tz=self.settings.time_zone, **fields)  # type: ignore[arg-type]

    def _set(self, inc: Incident) -> Incident:
        if inc != self.incident:
            self._updates.append(inc)
        self.incident = inc if inc.open else None
        return inc

    def _expire(self, now: datetime) -> None:
        if self.muted_until is not None and now >= self.muted_until:
            self.muted_until = None
        if self.suppression is not None and now >= self.suppression.until:
            self.suppression = None
            inc = self.incident
            if inc is not None and inc.test:
                # Still down after the check let go: from now on it is an outage like any other.
                self._set(replace(inc, test=None))
                self._debounce_from = now

    def _change(self, at: datetime, counted: bool) -> None:
        """One change (down or up), for flap detection; windows and checks' stops do not count."""
        if not counted:
            return
        window = self._s(self.settings.flap_window)
        self._changes.append(at)
        while self._changes and self._changes[0] <= at - window:
            self._changes.popleft()
        self._last_change = at
        if self.flapping:
            self._flap_changes += 1

    def _flap_alerts(self) -> list[Alert]:
        if self.flapping or len(self._changes) <= self.settings.flap_count:
            return []
        self.flapping = True
        self._flap_changes = len(self._changes)
        self.log.warning("flapping: %d changes within %.0f s", len(self._changes), self.settings.flap_window)
        if self._muted(self.clock()):
            return []
        return [self._alert(AlertKind.FLAPPING, self.incident or self.last_incident, flaps=len(self._changes),
                            flap_window=self.settings.flap_window, quiet_for=self.settings.flap_quiet)]

    def _went_down(self, obs: WentDown) -> list[Alert]:
        s = self.suppression
        test = s.reason if s is not None and obs.at < s.until else None  # a check stops it on purpose
        window = self.schedule.window_at(obs.at)
        self._change(obs.at, counted=window is None and test is None)
        inc = Incident(self.gateway, obs.at, obs.cause, obs.layer, obs.cause, obs.at, code=obs.code,
                       port_closed=obs.cause is DownCause.REFUSED, window=window, test=test)
        self._set(inc)
        self._debounce_from = obs.at
        self._reminded_at = None
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
            login_since = login_since or at  # the Gateway came back to its login screen
        elif cause is not DownCause.NOT_LOGGED_IN:
            login_since = None
        self._set(replace(inc, current=cause, layer=layer, layer_since=at if changed else inc.layer_since,
                          port_closed=port_closed, login_since=login_since))
        if changed:
            self.log.info("still down: %s (%s)", cause.now_words, layer.label)

    def _came_back(self, obs: CameBack) -> list[Alert]:
        inc = self.incident
        if inc is None:
            return []
        self._change(obs.at, counted=inc.window is None and inc.test is None)
        inc = self._set(replace(inc, ended_at=obs.at, recovery=obs.recovery))
        self.last_incident = inc
        self.log.info("back after %.1f s (%s)", inc.duration(obs.at), obs.recovery.how)
        out = self._flap_alerts()
        if self.flapping or self._muted(obs.at):
            return out
        if inc.alerted_at is not None:
            out.append(self._alert(AlertKind.RECOVERED, inc))
        elif inc.noted:
            out.append(self._alert(AlertKind.EXPECTED, inc, edit=True))
        return out

    def _settle_flapping(self, now: datetime) -> list[Alert]:
        quiet = self._s(self.settings.flap_quiet)
        if not self.flapping or self._last_change is None or now < self._last_change + quiet:
            return []
        self.flapping = False
        flaps, self._flap_changes = self._flap_changes, 0
        self._changes.clear()
        self.log.info("flapping over after %d changes", flaps)
        if self._muted(now):
            return []
        if self.incident is not None:
            inc = self._set(replace(self.incident, alerted_at=now))
            self._reminded_at = now
            return [self._alert(AlertKind.DOWN, inc, flaps=flaps)]
        return [self._alert(AlertKind.RECOVERED, self.last_incident, flaps=flaps)] if self.last_incident else []

    def _login_deadline(self, inc: Incident) -> datetime | None:
        return inc.login_since + self._s(self.settings.login_timeout) if inc.login_since else None

    def _login_due(self, inc: Incident) -> datetime | None:
        if inc.login_since is None or inc.login_alerted:
            return None
        settle = max(self.settings.down_after, LOGIN_SETTLE_IN_WINDOW if inc.window else 0.0)
        return inc.login_since + self._s(settle)

    def _outage_steps(self, inc: Incident) -> list[tuple[datetime, str]]:
        """The open incident's timed decisions, (when, which), in the order ``_outage`` takes them."""
        if inc.test is not None:
            return []  # the suppression's end is already a due time
        steps = []
        if inc.alerted_at is None and inc.window is not None:
            steps.append((self.schedule.escalate_at(inc.window), "down"))
            if not inc.noted:
                steps.append((inc.started_at + self._s(self.settings.down_after), "note"))
        elif inc.alerted_at is None and not self.flapping and self._debounce_from is not None:
            steps.append((self._debounce_from + self._s(self.settings.down_after), "down"))
        elif inc.alerted_at is not None and inc.acked_by is None and self._reminded_at is not None:
            steps.append((self._reminded_at + self._s(self.settings.remind_every), "remind"))
        if (login := self._login_due(inc)) is not None:
            steps.append((login, "login"))
        elif inc.login_alerted and not self._login_expired_sent and (deadline := self._login_deadline(inc)):
            steps.append((deadline, "login expired"))
        return steps

    def _outage(self, now: datetime, inc: Incident) -> list[Alert]:
        if self._muted(now):
            return []
        out: list[Alert] = []
        for step in [step for at, step in self._outage_steps(inc) if now >= at]:
            match step:
                case "down":  # after the debounce, or not back by the end of its expected window + grace
                    inc = self._set(replace(inc, alerted_at=now))
                    self._reminded_at = now
                    if inc.window is None:
                        self.log.warning("DOWN: %s", inc.cause.words)
                    out.append(self._alert(AlertKind.DOWN, inc, escalated=inc.window))
                case "note" if inc.alerted_at is None:
                    inc = self._set(replace(inc, noted=True))
                    out.append(self._alert(AlertKind.EXPECTED, inc))
                case "remind":
                    self._reminded_at = now
                    out.append(self._alert(AlertKind.REMINDER, inc))
                case "login":
                    inc = self._set(replace(inc, login_alerted=True))
                    out.append(self._alert(AlertKind.NEEDS_2FA, inc, deadline=self._login_deadline(inc)))
                case "login expired":
                    self._login_expired_sent = True
                    out.append(self._alert(AlertKind.NEEDS_2FA, inc, edit=True, deadline=self._login_deadline(inc)))
        return out

    def _farm(self, obs: FarmState) -> list[Alert]:
        farm = self._farms.get(obs.name)
        if not obs.ok:
            if farm is None:
                self._farms[obs.name] = _Farm(obs)
            return []
        if farm is None:
            return []
        del self._farms[obs.name]
        if farm.warned and not self._muted(obs.since):
            return [self._alert(AlertKind.FARM_WARNING, farm=farm.broken, farm_ok_at=obs.since, edit=True)]
        return []

    def _farm_warnings(self, now: datetime) -> list[Alert]:
        out = []
        for farm in self._farms.values():
            if farm.warned or now < farm.broken.since + self._s(self.settings.farm_grace) or self._muted(now):
                continue
            farm.warned = True
            # During an outage or a reset window farms are down with everything else: no news.
            if self.incident is None and self.schedule.window_at(farm.broken.since) is None:
                out.append(self._alert(AlertKind.FARM_WARNING, farm=farm.broken))
        return out

    def _relogin_reminder(self, now: datetime) -> list[Alert]:
        if self._relogin is None or now < self._relogin[0]:
            return []
        _, expiry = self._relogin
        self._relogin = self.schedule.next_relogin_reminder(now)
        if now >= expiry or self._muted(now):
            return []  # too late to be of use (gwbot was busy or muted): wait for next week's
        return [self._alert(AlertKind.RELOGIN_REMINDER, deadline=expiry)]
