"""Hostile and mistaken config files on real files: each is one line naming the key, and fast."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bot.config import ConfigError, load_config
from bot.config_file import MAX_VALUES


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def refusal(path: Path) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    message = str(err.value)
    assert "\n" not in message and len(message) < 300, message
    return message


URL = "an http:// or https:// URL with a host, like http://127.0.0.1:8081/bot (no spaces, query or fragment), or null"
PING = "an http:// or https:// URL, like https://hc-ping.com/UUID (no spaces), or null"
HOST = "a host name or IP address, like 127.0.0.1 (no spaces, port or URL parts)"
IBC = "IBC's command server, like {port: 7462} (CommandServerPort in IBC's config.ini)"
IDS = "a list of Telegram ids (non-zero integers; groups are negative)"


@pytest.mark.parametrize(("text", "message"), [
    # Keys that only make sense in order: the one the file gives is named.
    ("outbox: {retry_initial: 10}", "outbox.retry_initial: expected at most outbox.retry_max (3), got 10"),
    ("outbox: {retry_initial: 10, retry_max: 3}",
     "outbox.retry_max: expected at least outbox.retry_initial (10), got 3"),
    ("outbox: {retry_max: 0.5}", "outbox.retry_max: expected at least outbox.retry_initial (1), got 0.5"),
    ("watch: {login_settle: 200}", "watch.login_settle: expected less than watch.login_timeout (180), got 200"),
    ("watch: {login_timeout: 30}", "watch.login_timeout: expected more than watch.login_settle (30), got 30"),
    ("selfcheck: {ping_url: 'https://hc-ping.com/a b'}", f"selfcheck.ping_url: expected {PING}, got "
                                                          "'https://hc-ping.com/a b'"),
    ("selfcheck: {ping_url: 'https://'}", f"selfcheck.ping_url: expected {PING}, got 'https://'"),
    ("telegram: {api_base_url: not a url}", f"telegram.api_base_url: expected {URL}, got 'not a url'"),
    ("telegram: {api_base_url: 'http://127.0.0.1:99999/bot'}",
     f"telegram.api_base_url: expected {URL}, got 'http://127.0.0.1:99999/bot'"),
    ("telegram: {api_base_url: 'ftp://x/bot'}", f"telegram.api_base_url: expected {URL}, got 'ftp://x/bot'"),
    ("telegram: {api_base_url: 'http://x/bot?a=1'}", f"telegram.api_base_url: expected {URL}, got 'http://x/bot?a=1'"),
    ("ibkr: {host: ''}", f"ibkr.host: expected {HOST}, got ''"),
    ("ibkr: {host: 'gw host'}", f"ibkr.host: expected {HOST}, got 'gw host'"),
    ("gateways: {b: {host: 'localhost:4002'}}", f"gateways.b.host: expected {HOST}, got 'localhost:4002'"),
    ("ibkr: {host: 'http://gw'}", f"ibkr.host: expected {HOST}, got 'http://gw'"),
    ("ibkr: {host: '[::1]'}", f"ibkr.host: expected {HOST}, got '[::1]'"),
    ("ibkr: {account: 'DU 123'}", "ibkr.account: expected an IBKR account id without spaces, like DU1234567, "
                                  "got 'DU 123'"),
    ("telegram: {allowed_chat_ids: [0]}", f"telegram.allowed_chat_ids: expected {IDS}, got [0]"),
    # SQLite's INTEGER ends at 2**63 - 1: such an id would fail only when its first message is stored.
    ("watch: {alert_chat_ids: [100000000000000000000]}",
     f"watch.alert_chat_ids: expected {IDS}, got [100000000000000000000]"),
    ('data_dir: "a\\0b"', "data_dir: expected a folder path (a non-empty string without NUL characters), "
                          "got 'a\\x00b'"),
    # YAML 1.1 would read these as 2050 (octal), 4000 (base 60) and 10: a mistyped number, not another one.
    ("ibkr: {port: 04002}", "ibkr.port: expected an integer 1-65535, got '04002'"),
    ("ibkr: {port: 1:6:40}", "ibkr.port: expected an integer 1-65535, got '1:6:40'"),
    ("ibkr: {client_id: 1_0}", "ibkr.client_id: expected an integer 0-2147482747, got '1_0'"),
    ("ibkr: {port: 2020-13-45}", "invalid YAML at line 1, column 14: month must be in 1..12"),
    ("a: &a [*a]", "line 1: alias *a is inside its own anchor &a (a recursive value); write the values out"),
    (f"{'k' * 500}: 1", f"'{'k' * 27}...{'k' * 28}': unknown key"),
    # IBC's command server: a mapping with its own keys, each named when wrong.
    ("ibkr: {ibc: 7462}", f"ibkr.ibc: expected null (off) or a mapping: {IBC}, got 7462"),
    ("ibkr: {ibc: {}}", f"ibkr.ibc.port: missing; ibc is {IBC}"),
    ("ibkr: {ibc: {prot: 7462}}", "ibkr.ibc.prot: unknown key (did you mean 'port'?)"),
    ("ibkr: {ibc: {port: 0}}", "ibkr.ibc.port: expected an integer 1-65535, got 0"),
    ("gateways: {b: {client_id: 50, ibc: {port: 7462, host: 'a b'}}}",
     f"gateways.b.ibc.host: expected null (the Gateway's host) or {HOST}, got 'a b'"),
    ("ibkr: {ibc: {port: 4002}}", "ibkr.ibc.port: 4002 is the Gateway's API port; IBC's command server listens on "
                                  "CommandServerPort from IBC's config.ini (7462 by convention)"),
])
def test_a_wrong_value_is_refused_at_load_naming_its_key(tmp_path, text, message):
    assert refusal(write(tmp_path, text + "\n")) == f"config.yaml: {message}"


def test_an_integer_python_cannot_read_is_one_line(tmp_path):
    assert refusal(write(tmp_path, f"ibkr: {{port: {'1' * 5000}}}\n")).startswith(
        "config.yaml: invalid YAML at line 1, column 14: Exceeds the limit (4300 digits)")


def test_numbers_are_decimal_as_in_yaml_1_2(tmp_path):
    cfg = load_config(write(tmp_path, "ibkr: {port: +4002, connect_timeout: 1e1, heartbeat_timeout: .5, client_id: 0}\n"
                                      "telegram: {allowed_chat_ids: [-1001234567890]}\n"), env={})
    gw = cfg.gateway()
    assert (gw.port, gw.connect_timeout, gw.heartbeat_timeout, gw.client_id) == (4002, 10.0, 0.5, 0)
    assert cfg.telegram.allowed_chat_ids == frozenset({-1001234567890})


def test_an_alias_used_as_the_yaml_spec_means_still_loads(tmp_path):
    cfg = load_config(write(tmp_path, "watch: {alert_chat_ids: &ops [5, -6]}\ntelegram: {allowed_chat_ids: *ops}\n"
                                      "outbox: {retry_initial: 2, retry_max: 2}\n"), env={})
    assert cfg.telegram.allowed_chat_ids == cfg.watch.alert_chat_ids == frozenset({5, -6})


def test_a_data_dir_that_cannot_be_a_folder_is_one_line(tmp_path):
    (tmp_path / "hostname").write_text("box\n")
    assert refusal(write(tmp_path, "data_dir: hostname\n")) == (
        f"config.yaml: data_dir: {tmp_path / 'hostname'} is a file, not a folder; set data_dir to a folder")
    assert refusal(write(tmp_path, "data_dir: '~nosuchuser4711/data'\n")) == (
        "config.yaml: data_dir: cannot find the folder '~nosuchuser4711/data' (no such user, home or a symlink "
        "loop); write the path out")
    os.symlink("loop2", tmp_path / "loop1")
    os.symlink("loop1", tmp_path / "loop2")
    assert refusal(write(tmp_path, "data_dir: loop1/data\n")).startswith(
        "config.yaml: data_dir: cannot find the folder 'loop1/data'")
    assert refusal(write(tmp_path, f"data_dir: {'x' * 300}\n")) == (
        f"config.yaml: data_dir: cannot use '{'x' * 27}...{'x' * 28}': File name too long; set data_dir to a "
        "folder gwbot can use")


def refused_fast(path: Path) -> str:
    started = time.perf_counter()
    message = refusal(path)
    assert time.perf_counter() - started < 1.0, message
    return message


def test_a_huge_file_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("#" + "x" * 2_000_000 + "\n", encoding="utf-8")
    assert refused_fast(path) == "config.yaml: larger than 1 MB; a gwbot config is a few kB (is it the right file?)"


def test_too_many_values_are_refused_while_parsing(tmp_path):
    path = write(tmp_path, "telegram: {allowed_chat_ids: [" + ", ".join(["5"] * 300_000) + "]}\n")
    assert path.stat().st_size < 1_000_000
    assert refused_fast(path) == (f"config.yaml: line 1: more than {MAX_VALUES} values; a gwbot config has about "
                                  "a hundred")


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    lines = ["a0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    assert refused_fast(write(tmp_path, "\n".join(lines) + "\n")) == (
        f"config.yaml: line 4: aliases expand to more than {MAX_VALUES} values; a gwbot config has about a "
        "hundred, write them out")


def test_deep_nesting_is_refused_without_a_recursion_error(tmp_path):
    assert refused_fast(write(tmp_path, "a: " + "[" * 30 + "]" * 30 + "\n")) == (
        "config.yaml: line 1: nested more than 20 levels deep; a gwbot config needs 3")
    assert refused_fast(write(tmp_path, "a: " + "[" * 5000 + "]" * 5000 + "\n")).startswith("config.yaml: ")


@pytest.mark.parametrize("host", ["::1", "127.0.0.1", "gw-1.example.com", "fe80::1%eth0", "localhost"])
def test_a_host_getaddrinfo_takes_loads(tmp_path, host):
    assert load_config(write(tmp_path, f"ibkr: {{host: '{host}'}}\n"), env={}).gateway().host == host


def test_ibc_is_off_unless_given_and_runs_beside_its_gateway_unless_told(tmp_path):
    assert load_config(write(tmp_path, "ibkr: {}\n"), env={}).gateway().ibc is None
    config = load_config(write(tmp_path, "ibkr: {ibc: {port: 7462}}\ngateways:\n"
                                         "  live: {host: 10.0.0.5, port: 4001, client_id: 50}\n"
                                         "  other: {client_id: 90, ibc: null}\n"
                                         "  far: {client_id: 130, ibc: {port: 7463, host: 10.0.0.9}}\n"), env={})
    assert [(g.ibc.host, g.ibc.port) if g.ibc else None for g in config.gateways] == [
        ("127.0.0.1", 7462), ("10.0.0.5", 7462), None, ("10.0.0.9", 7463)]
    assert config.public_dict()["gateways"][0]["ibc"] == {"port": 7462, "host": "127.0.0.1"}
