"""Config loading on real files: the seed's values, precedence, and the error table."""

from __future__ import annotations

import argparse
import functools
import shlex
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.config import ConfigError, GatewayConfig, load_config

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_file_equals_the_built_in_defaults(tmp_path):
    shipped = load_config(ROOT / "config" / "config.yaml", env={})
    empty = load_config(write(tmp_path, "{}"), env={})
    assert replace(shipped, source=None) == replace(empty, source=None)
    assert shipped.data_dir == (ROOT / "data").resolve()


def test_seed_values(tmp_path):
    gw = load_config(write(tmp_path, ""), env={}).gateway()
    assert (gw.account, gw.host, gw.port, gw.client_id) == ("DUO779750", "127.0.0.1", 4002, 1)
    assert (gw.reconnect_delay, gw.max_reconnect_attempts, gw.allow_live) == (10, 5, False)


def test_precedence_explicit_path_then_env(tmp_path, monkeypatch):
    a = write(tmp_path, "ibkr: {port: 1111}", "a.yaml")
    b = write(tmp_path, "ibkr: {port: 2222}", "b.yaml")
    env = {"GWBOT_CONFIG": str(b)}
    assert load_config(a, env=env).gateway().port == 1111
    assert load_config(None, env=env).gateway().port == 2222
    monkeypatch.chdir(tmp_path)  # no config/config.yaml here: built-in defaults
    assert load_config(None, env={}).source is None


def test_token_only_from_the_environment(tmp_path):
    path = write(tmp_path, "telegram: {allowed_chat_ids: [-100123, 5]}")
    cfg = load_config(path, env={"TELEGRAM_BOT_TOKEN": "123:abc"})
    assert cfg.telegram.token == "123:abc"
    assert cfg.telegram.allowed_chat_ids == frozenset({-100123, 5})
    assert "123:abc" not in repr(cfg) and "token" not in cfg.public_dict()["telegram"]
    with pytest.raises(ConfigError, match="never put the bot token in a file; set TELEGRAM_BOT_TOKEN"):
        load_config(write(tmp_path, "telegram: {token: '123:abc'}"), env={})


def test_named_gateways_inherit_and_override(tmp_path):
    cfg = load_config(write(tmp_path, "ibkr: {port: 4002, client_id: 3}\ngateways: {backup: {port: 4004}}"), env={})
    assert cfg.gateway_names == ("paper", "backup")
    backup = cfg.gateway("backup")
    assert backup == GatewayConfig(name="backup", port=4004, client_id=3)
    with pytest.raises(ConfigError, match="unknown Gateway 'nope'; configured: paper, backup"):
        cfg.gateway("nope")


NAME_RULE = ("a Gateway name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, not a number "
             "(so that /status NAME and --gateway NAME reach it)")


@pytest.mark.parametrize(("text", "message"), [
    ("ibkr: {port: abc}", "config.yaml: ibkr.port: expected an integer 1-65535, got 'abc'"),
    ("ibkr: {port: true}", "config.yaml: ibkr.port: expected an integer 1-65535, got True"),
    ("ibkr: {port: 0}", "config.yaml: ibkr.port: expected an integer 1-65535, got 0"),
    ("ibkr: {port: 70000}", "config.yaml: ibkr.port: expected an integer 1-65535, got 70000"),
    ("ibkr: {reconnect_delay: -1}",
     "config.yaml: ibkr.reconnect_delay: expected a number of seconds from 0 to 3600, got -1"),
    ("ibkr: {heartbeat_interval: 0.5}",
     "config.yaml: ibkr.heartbeat_interval: expected a number of seconds from 1 to 3600, got 0.5"),
    ("ibkr: {allow_live: 'yes'}", "config.yaml: ibkr.allow_live: expected true or false, got 'yes'"),
    ("ibkr: [1, 2]", "config.yaml: ibkr: expected a mapping, got list"),
    ("ibkr: {prot: 4002}", "config.yaml: ibkr.prot: unknown key (did you mean 'port'?)"),
    ("sok: {}", "config.yaml: sok: unknown key (did you mean 'soak'?)"),
    ("zzz: 1", "config.yaml: zzz: unknown key"),
    ("soak: {duraton: 5}", "config.yaml: soak.duraton: unknown key (did you mean 'duration'?)"),
    ("telegram: {allowed_chat_ids: abc}",
     "config.yaml: telegram.allowed_chat_ids: expected a list of Telegram ids (non-zero integers; groups are "
     "negative), got 'abc'"),
    ("logging: {level: LOUD}", "config.yaml: logging.level: expected one of DEBUG, INFO, WARNING, ERROR, got 'LOUD'"),
    ("- a\n- b", "config.yaml: expected a mapping at the top level, got list"),
    ("ibkr:\n  port: 4002\n   host: x",
     "config.yaml: invalid YAML at line 3, column 8: mapping values are not allowed in this context"),
    ("gateways: {paper: {port: 1}}", "config.yaml: gateways.paper: Gateway name 'paper' is used twice"),
    ("gateways: {b: {name: c}}", "config.yaml: gateways.b.name: not allowed here: the Gateway's name is its key, 'b'"),
    ("gateways: {7: {port: 1}}", f"config.yaml: gateways.7: expected {NAME_RULE}, got 7"),
    # /status my gw reaches no Gateway: chat commands split their arguments on whitespace.
    ("gateways: {my gw: {port: 4004}}", f"config.yaml: gateways.my gw: expected {NAME_RULE}, got 'my gw'"),
    ("ibkr: {name: my gw}", f"config.yaml: ibkr.name: expected {NAME_RULE}, got 'my gw'"),
    ("gateways: {\"a\\u00a0b\": {port: 4004}}",  # a no-break space: str.split splits there too
     f"config.yaml: gateways.'a\\xa0b': expected {NAME_RULE}, got 'a\\xa0b'"),
    ("gateways: {\"a\\nb\": {port: 4004}}", f"config.yaml: gateways.'a\\nb': expected {NAME_RULE}, got 'a\\nb'"),
    ("gateways: {'5': {port: 4004}}", f"config.yaml: gateways.5: expected {NAME_RULE}, got '5'"),  # /status 5: a number
    ("gateways: {-x: {port: 4004}}", f"config.yaml: gateways.-x: expected {NAME_RULE}, got '-x'"),  # a flag
    ("gateways: {'a;b': {port: 4004}}", f"config.yaml: gateways.a;b: expected {NAME_RULE}, got 'a;b'"),
    ("gateways: {'': {port: 4004}}", f"config.yaml: gateways.: expected {NAME_RULE}, got ''"),
    (f"gateways: {{{'g' * 65}: {{port: 4004}}}}",
     f"config.yaml: gateways.{'g' * 65}: expected {NAME_RULE}, got '{'g' * 27}...{'g' * 28}'"),
    ("ibkr: {reconnect_delay: .nan}",
     "config.yaml: ibkr.reconnect_delay: expected a number of seconds from 0 to 3600, got nan"),
    ("soak: {duration: .inf}", "config.yaml: soak.duration: expected a number of seconds from 3 to 86400, got inf"),
    ("data_dir: 5", "config.yaml: data_dir: expected a folder path (a non-empty string without NUL characters), "
     "got 5"),
    # Every role's id (client_id + up to 900) must be a valid client id: 2**31 - 1 at most.
    ("ibkr: {client_id: 2147482748}", "config.yaml: ibkr.client_id: expected an integer 0-2147482747, got 2147482748"),
    ("gateways: {b: {account: X}}", "config.yaml: gateways.b.client_id: 1 collides with Gateway 'paper' on "
     "127.0.0.1:4002 (its check id 1 is paper's check id); pick a client_id that differs from 1 by none of "
     "0, 100, 200, 300, 600, 700, 800, 900"),
    ("ibkr: {client_id: 5}\ngateways: {b: {port: 4004}, c: {port: 4004, client_id: 805}}",
     "config.yaml: gateways.c.client_id: 805 collides with Gateway 'b' on 127.0.0.1:4004 (its check id 805 is "
     "b's status id); pick a client_id that differs from 5 by none of 0, 100, 200, 300, 600, 700, 800, 900"),
    (f"ibkr: {{port: '{'x' * 500}'}}",
     "config.yaml: ibkr.port: expected an integer 1-65535, got '" + "x" * 27 + "..." + "x" * 28 + "'"),
])
def test_error_table(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), env={})
    assert str(err.value) == message


def test_each_role_gets_its_own_id_and_gateways_apart_may_share_ids(tmp_path):
    from bot.client_ids import ClientRole

    text = "ibkr: {client_id: 7}\ngateways: {live: {port: 4001}, b: {client_id: 8}}"
    cfg = load_config(write(tmp_path, text), env={})
    paper, live, b = cfg.gateways
    assert [paper.client_id_for(r) for r in ClientRole] == [7, 607, 707, 807, 907]
    assert live.client_id_for(ClientRole.STATUS) == 807  # another port: the same ids are no collision
    assert b.client_id_for(ClientRole.WATCH) == 708


def test_missing_file_is_one_clear_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^nope\.yaml: file not found \(.*nope\.yaml\)$"):
        load_config(tmp_path / "nope.yaml", env={})


@pytest.mark.parametrize(("text", "message"), [
    ("soak: {duration: 1.0e+300}",
     "config.yaml: soak.duration: expected a number of seconds from 3 to 86400, got 1e+300"),
    ("soak: {duration: 0}", "config.yaml: soak.duration: expected a number of seconds from 3 to 86400, got 0"),
    ("ibkr: {reconnect_delay: 1.0e+300}",
     "config.yaml: ibkr.reconnect_delay: expected a number of seconds from 0 to 3600, got 1e+300"),
    ("checks: {operator_timeout: 1.0e+12}",
     "config.yaml: checks.operator_timeout: expected a number of seconds > 0, at most 86400, got 1000000000000.0"),
    ("ibkr: {max_reconnect_attempts: 99999999999}",
     "config.yaml: ibkr.max_reconnect_attempts: expected an integer 0-1000, got 99999999999"),
])
def test_every_duration_has_a_range(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), env={})
    assert str(err.value) == message


@pytest.mark.parametrize(("text", "message"), [
    ("ibkr:\n  port: 4002\n  host: x\n  port: 4004\n",
     "config.yaml: ibkr.port: given twice, at lines 2 and 4 (keep one)"),
    ("soak: {duration: 5}\nlogging: {}\nsoak: {}\n", "config.yaml: soak: given twice, at lines 1 and 3 (keep one)"),
])
def test_duplicate_keys_name_both_lines(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), env={})
    assert str(err.value) == message


def test_a_copied_shipped_config_keeps_the_projects_data_folder(tmp_path):
    copy = write(tmp_path, (ROOT / "config" / "config.yaml").read_text(encoding="utf-8"), "my.yaml")
    assert load_config(copy, env={}).data_dir == (ROOT / "data").resolve()
    assert load_config(write(tmp_path, "{}", "empty.yaml"), env={}).data_dir == (ROOT / "data").resolve()
    assert load_config(write(tmp_path, "data_dir: here"), env={}).data_dir == tmp_path / "here"


def test_a_data_dir_whose_parent_is_missing_is_an_error_not_a_new_tree(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "data_dir: nowhere/data"), env={})
    assert str(err.value) == (f"config.yaml: data_dir: {tmp_path / 'nowhere'} does not exist; "
                              "create it, or set data_dir to a folder that exists")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("token", ["hello", "123456", "abc:def", "123456:short", "123456:" + "A" * 34 + " x"])
def test_a_token_that_is_not_digits_colon_letters_is_refused(token):
    from bot.config import token_error

    assert token_error(token) == ("TELEGRAM_BOT_TOKEN does not look like a bot token (digits:letters, "
                                  "like 123456789:AAH...); copy it again from @BotFather")
    assert token_error("110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw") is None


@functools.cache
def _cli() -> argparse.ArgumentParser:
    from bot.frontends.cli import _parser

    return _parser()


def _reaches(cfg, name: str) -> None:
    """``name`` is reached from chat (PTB's CommandHandler takes ``text.split()[1:]`` as the
    arguments) and from a shell (one word shlex leaves unquoted, parsed by gwbot's own argparse)."""
    from handlers.context import gateway_arg

    services = SimpleNamespace(core=SimpleNamespace(config=cfg))
    assert gateway_arg(services, "status", f"/status {name}".split()[1:]).name == name
    assert shlex.quote(name) == name
    assert _cli().parse_args(shlex.split(f"check port --gateway {name}")).gateway == name


@pytest.mark.parametrize("name", ["g" * 60, "paper-2.backup_" + "x" * 49, "0x10", "1_000", "v1.2"])
def test_a_name_of_up_to_64_characters_loads_and_every_edge_reaches_it(tmp_path, name):
    cfg = load_config(write(tmp_path, f"gateways: {{'{name}': {{port: 4004}}}}"), env={})
    assert cfg.gateway_names == ("paper", name)
    _reaches(cfg, name)
    assert load_config(write(tmp_path, f"ibkr: {{name: '{name}'}}"), env={}).gateway_names == (name,)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=70)
       | st.from_regex(r"[A-Za-z0-9._+@:/ -]{1,66}", fullmatch=True))
def test_a_name_loads_only_if_chat_and_the_shell_can_reach_it(tmp_path, name):
    path = write(tmp_path, yaml.safe_dump({"gateways": {name: {"port": 4004}}}))
    try:
        cfg = load_config(path, env={})
    except ConfigError as err:
        assert str(err).startswith("config.yaml: gateways.") and "\n" not in str(err)  # refused, in one line
        return
    _reaches(cfg, name)
