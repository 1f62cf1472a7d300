"""Scheduled drills: ``drill:`` in config, the scheduler's decisions on a fake clock, and one
scheduled drill end to end whose result lands in the alert chat."""

from __future__ import annotations

from datetime import UTC, datetime, time
from pathlib import Path

import pytest

from bot.config import ConfigError, load_config
from bot.watch.schedule import Recurring

SHAPE = "expected null (off) or a schedule {days, time: 'HH:MM', tz}"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_schedule_is_days_and_a_time_in_its_zone(tmp_path):
    text = """
drill:
  schedule: {days: [mon, thu], time: "17:30", tz: America/New_York}
  trading: [{name: session, days: weekdays, start: "09:30", end: "16:00", tz: America/New_York}]
"""
    drill = load_config(write(tmp_path, text), env={}).drill
    assert drill.schedule == Recurring(time(17, 30), "America/New_York", frozenset({0, 3}))
    assert drill.trading[0].name == "session" and drill.allow_live is False
    # Thursday 2026-11-26 14:00 UTC: next is that day 17:30 New York (EST: 22:30 UTC), then Monday.
    thursday = datetime(2026, 11, 26, 14, 0, tzinfo=UTC)
    first = drill.schedule.next_after(thursday)
    assert first == datetime(2026, 11, 26, 22, 30, tzinfo=UTC)
    assert drill.schedule.next_after(first) == datetime(2026, 11, 30, 22, 30, tzinfo=UTC)
    # In July New York is on EDT: the same 17:30 is 21:30 UTC.
    assert drill.schedule.next_after(datetime(2026, 7, 2, 0, 0, tzinfo=UTC)) == datetime(2026, 7, 2, 21, 30, tzinfo=UTC)
    assert load_config(write(tmp_path, ""), env={}).drill.schedule is None  # off unless configured


@pytest.mark.parametrize(("text", "message"), [
    ("drill: {schedule: '17:30'}", f"drill.schedule: {SHAPE}, e.g. {{days: weekdays, time: '17:30', "
                                   "tz: America/New_York}, got '17:30'"),
    ("drill: {schedule: {time: '17:30'}}", f"drill.schedule: {SHAPE}, e.g. {{days: weekdays, time: '17:30', "
                                           "tz: America/New_York}, got {'time': '17:30'}"),
    ("drill: {schedule: {time: '24:00', tz: UTC}}",
     f"drill.schedule: {SHAPE} with a time from '00:00' to '23:59', got {{'time': '24:00', 'tz': 'UTC'}}"),
    ("drill: {schedule: {days: [], time: '10:00', tz: UTC}}",
     f"drill.schedule: {SHAPE} with days 'daily', 'weekdays', 'weekends' or a list of mon..sun, "
     "got {'days': [], 'time': '10:00', 'tz': 'UTC'}"),
    ("drill: {schedule: {time: '10:00', tz: Mars/Base}}",
     f"drill.schedule: {SHAPE} with tz a time zone name such as America/New_York or UTC, "
     "got {'time': '10:00', 'tz': 'Mars/Base'}"),
    ("drill: {allow_live: 'yes'}", "drill.allow_live: expected true or false, got 'yes'"),
    ("drill: {trading: null}", "drill.trading: expected a list of windows like {name, days, start: 'HH:MM', "
                               "end: 'HH:MM', tz}, or [] for none, got None"),
    ("drill: {schedul: null}", "drill.schedul: unknown key (did you mean 'schedule'?)"),
])
def test_a_bad_drill_setting_is_one_line_naming_its_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), env={})
    assert str(err.value) == "config.yaml: " + message
