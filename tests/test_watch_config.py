"""The ``watch:`` config section: defaults, expected windows, and one-line errors."""

from __future__ import annotations

from datetime import UTC, datetime, time
from pathlib import Path

import pytest

from bot.config import ConfigError, load_config
from bot.watch.schedule import WindowKind, default_windows


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_ibkrs_published_windows(tmp_path):
    watch = load_config(write(tmp_path, ""), env={}).watch
    assert (watch.down_after, watch.remind_every, watch.login_timeout) == (3, 900, 180)
    assert watch.schedule.windows == default_windows("north_america")
    asia = load_config(write(tmp_path, "watch: {region: asia}"), env={}).watch.schedule
    assert [w.tz for w in asia.windows[:2]] == ["Asia/Hong_Kong", "Asia/Hong_Kong"]


def test_configured_windows_replace_the_defaults(tmp_path):
    text = """
watch:
  alert_chat_ids: [-100123]
  expected:
    - {name: nightly reset, days: [sat, Sunday], start: "00:15", end: "01:45", tz: America/New_York, kind: reset}
    - {name: lunch, start: 12:00, end: 12:30, tz: Europe/London}
"""  # unquoted times are text: numbers in a config are decimal
    watch = load_config(write(tmp_path, text), env={}).watch
    reset, lunch = watch.schedule.windows
    assert reset.days == frozenset({5, 6}) and reset.kind is WindowKind.RESET and reset.start == time(0, 15)
    assert lunch.days == frozenset(range(7)) and lunch.kind is WindowKind.OTHER
    # London in summer: 12:00 BST is 11:00 UTC.
    assert watch.schedule.window_at(datetime(2026, 7, 1, 11, 10, tzinfo=UTC)).window is lunch
    assert watch.alert_chat_ids == frozenset({-100123})


TIMES = " with start and end from '00:00' to '23:59'"


@pytest.mark.parametrize(("text", "message"), [
    ("watch: {down_after: -1}", "watch.down_after: expected a number of seconds from 0 to 3600, got -1"),
    ("watch: {remind_every: 5}", "watch.remind_every: expected a number of seconds from 60 to 86400, got 5"),
    ("watch: {flap_count: 1}", "watch.flap_count: expected an integer 2-1000, got 1"),
    ("watch: {region: mars}", "watch.region: expected one of north_america, europe, asia, got 'mars'"),
    ("watch: {time_zone: Mars/Base}", "watch.time_zone: expected a time zone name such as America/New_York or UTC, "
                                      "got 'Mars/Base'"),
    ("watch: {time_zone: America}", "watch.time_zone: expected a time zone name such as America/New_York or UTC, "
                                    "got 'America'"),
    ("watch: {expected: 5}", "watch.expected: expected a list of windows, or null for IBKR's defaults, got 5"),
    ("watch: {expected: [{name: x, start: '25:00', end: '01:00', tz: UTC}]}",
     "watch.expected: expected a window {name, days, start: 'HH:MM', end: 'HH:MM', tz, kind}" + TIMES +
     ", got [{'end': '01:00', 'name': 'x', 'start': '25:00', 'tz': 'UTC'}]"),
    # Read as "all day" it would file every stop as expected: no 🔴 ever.
    ("watch: {expected: [{name: maint, start: '05:00', end: '05:00', tz: UTC}]}",
     "watch.expected: expected a window that ends at another time than it starts ('maint' starts and ends at "
     "05:00; one across midnight ends before it starts, e.g. start '23:00', end '03:00'), "
     "got [{'end': '05:00', 'name': 'maint', 'start': '05:00', 'tz': 'UTC'}]"),
    # fromisoformat takes these too; '0500Z' is a time with a zone that the window's end cannot be compared with.
    *((f"watch: {{expected: [{{name: x, start: '{start}', end: '06:00', tz: UTC}}]}}",
       "watch.expected: expected a window {name, days, start: 'HH:MM', end: 'HH:MM', tz, kind}" + TIMES +
       f", got [{{'end': '06:00', 'name': 'x', 'start': '{start}', 'tz': 'UTC'}}]")
      for start in ("0500Z", "05.00", "T0500", "5:00 ")),
    # Numbers are decimal: unquoted 9:30 is text (YAML 1.1 read it as the base-60 number 570).
    ("watch: {expected: [{name: x, start: 9:30, end: '23:55', tz: UTC}]}",
     "watch.expected: expected a window {name, days, start: 'HH:MM', end: 'HH:MM', tz, kind}" + TIMES +
     ", got [{'end': '23:55', 'name': 'x', 'start': '9:30', 'tz': 'UTC'}]"),
    ("watch: {expected: [{name: x, start: '01:00', end: '02:00', tz: UTC, days: [funday]}]}",
     "watch.expected: expected a window {name, days, start: 'HH:MM', end: 'HH:MM', tz, kind} with days 'daily', "
     "'weekdays' or a list of mon..sun, got "
     "[{'days': ['funday'], 'end': '02:00', 'name': 'x', 'start': '01:00', ...}]"),
    ("watch: {expected: [{name: x, start: '01:00', end: '02:00', tz: UTC, kind: lunch}]}",
     "watch.expected: expected a window kind: one of reset, maintenance, restart, other, "
     "got [{'end': '02:00', 'kind': 'lunch', 'name': 'x', 'start': '01:00', ...}]"),
    ("watch: {expected: [{name: x, start: '01:00', end: '02:00'}]}",
     "watch.expected: expected a window {name, days, start: 'HH:MM', end: 'HH:MM', tz, kind}, "
     "got [{'end': '02:00', 'name': 'x', 'start': '01:00'}]"),
    ("watch: {down_aftr: 3}", "watch.down_aftr: unknown key (did you mean 'down_after'?)"),
])
def test_watch_errors_are_one_line(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), env={})
    assert str(err.value) == "config.yaml: " + message
