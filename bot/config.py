"""gwbot's configuration: one YAML file, validated into frozen dataclasses.

Every key is optional (an empty file gives the seed's values). Errors are one line naming the
file, the key path and what was expected: ``config.yaml: ibkr.port: expected an integer
1-65535, got 'abc'``. Unknown keys are errors, so a typo never silently falls back to a default.
The Telegram token comes only from the TELEGRAM_BOT_TOKEN environment variable.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from bot.client_ids import CLIENT_ID_MAX, ClientRole
from bot.watch.schedule import REGIONS, Schedule, Window, default_windows, parse_window, zone_name

ENV_CONFIG = "GWBOT_CONFIG"
ENV_TOKEN = "TELEGRAM_BOT_TOKEN"
DEFAULT_PATH = Path("config") / "config.yaml"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Where the database lives unless a config file says otherwise: the project's data/ beside config/.
PROJECT_DATA_DIR = Path(__file__).resolve().parents[1] / "data"
# Telegram's documented shape (bot id, colon, secret); Telegram promises nothing stricter.
TOKEN_SHAPE = re.compile(r"\d+:[A-Za-z0-9_-]{30,}")
# What a typed number may look like: plain ASCII decimals (int()/float() also take '1_0', '٣', 'nan').
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)


class ConfigError(Exception):
    """One line that says which file, which key, and what is wrong."""


@dataclass(frozen=True)
class Range:
    """The numbers one setting accepts, declared once beside it and used by every edge that takes it
    (config file, CLI flag, chat argument). ``low_open`` excludes ``low`` itself. Called with a
    YAML value, it is that setting's validator."""

    low: float
    high: float
    integer: bool = False
    low_open: bool = False
    unit: str = "seconds"
    wording: str | None = None  # says it better than the bounds (a run number's bound is 2**63 - 1)

    @property
    def expected(self) -> str:
        if self.wording:
            return self.wording
        if self.integer:
            return f"an integer {self.low}-{self.high}"
        if self.low_open:
            return f"a number of {self.unit} > {self.low:g}, at most {self.high:g}"
        return f"a number of {self.unit} from {self.low:g} to {self.high:g}"

    def contains(self, v: Any) -> bool:
        if self.integer:
            return _is_int(v) and self.low <= v <= self.high
        # .nan / .inf are valid YAML floats but would make sleeps and timeouts meaningless.
        return ((_is_int(v) or isinstance(v, float)) and math.isfinite(v)
                and (self.low < v if self.low_open else self.low <= v) and v <= self.high)

    def parse(self, text: str) -> int | float:
        """A typed number (flag or chat argument) in this range; ValueError saying what is expected."""
        if not NUMBER.fullmatch(text) or (self.integer and not re.fullmatch(r"[+-]?\d+", text)):
            raise ValueError(self.expected)
        value = int(text) if self.integer else float(text)
        if not self.contains(value):
            raise ValueError(self.expected)
        return value

    def __call__(self, v: Any) -> int | float:
        if not self.contains(v):
            raise _Bad(self.expected)
        return v if self.integer else float(v)


# ---------------------------------------------------------------- validators
# Each takes the raw YAML value and returns the typed value, or raises _Bad saying what was expected.
Validator = Callable[[Any], Any]


class _Bad(Exception):
    def __init__(self, expected: str) -> None:
        self.expected = expected


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # YAML's true is an int to Python


def _rule(ok: Callable[[Any], bool], expected: str, convert: Callable[[Any], Any] = lambda v: v) -> Validator:
    """A validator: values that pass ``ok``, converted; any other is told what was ``expected``."""
    def check(v: Any) -> Any:
        if not ok(v):
            raise _Bad(expected)
        return convert(v)
    return check


def _optional(allowed: Range) -> Validator:
    return _rule(lambda v: v is None or allowed.contains(v), f"null or {allowed.expected}",
                 lambda v: None if v is None else allowed(v))


_text = _rule(lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty string")
_optional_url = _rule(lambda v: v is None or (isinstance(v, str) and v.startswith(("http://", "https://"))
                                              and len(v) > 8), "an http:// or https:// URL, or null")
_boolean = _rule(lambda v: isinstance(v, bool), "true or false")
_id_set = _rule(lambda v: isinstance(v, list) and all(_is_int(i) for i in v), "a list of integers", frozenset)
_level = _rule(lambda v: isinstance(v, str) and v.upper() in LOG_LEVELS, f"one of {', '.join(LOG_LEVELS)}",
               str.upper)
_region = _rule(lambda v: v in REGIONS, f"one of {', '.join(REGIONS)}")
# One word in chat (PTB splits /status NAME on whitespace, and a number there is read as one) and
# in a shell without quotes (--gateway NAME, no leading '-'); ASCII, so what is typed matches exactly.
GATEWAY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)
_gateway_name = _rule(lambda v: isinstance(v, str) and bool(GATEWAY_NAME.fullmatch(v)) and not NUMBER.fullmatch(v),
                      "a Gateway name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, not a "
                      "number (so that /status NAME and --gateway NAME reach it)")


def _optional_text(v: Any) -> str | None:
    return None if v is None else _text(v)


def _parsed(parse: Callable[[Any], Any]) -> Validator:
    """A validator from a parser that raises ValueError saying what it expects."""
    def check(v: Any) -> Any:
        try:
            return parse(v)
        except ValueError as e:
            raise _Bad(str(e)) from None
    return check


_zone_name = _parsed(zone_name)
_window = _parsed(parse_window)


def _windows(v: Any) -> tuple[Window, ...] | None:
    if v is None:
        return None  # IBKR's published windows for watch.region
    if not isinstance(v, list):
        raise _Bad("a list of windows, or null for IBKR's defaults")
    return tuple(_window(w) for w in v)


PORT = Range(1, 65535, integer=True)
# Every role's id (configured id + its offset, bot/client_ids.py) must still be a valid client id.
CLIENT_ID = Range(0, CLIENT_ID_MAX - max(ClientRole), integer=True)
RUN_ID = Range(1, 2**63 - 1, integer=True, wording="a run number (gwbot history lists them)")  # SQLite's rowid
# The checklist asks for 10+ minutes; a day is the longest that still makes sense, 3 s the shortest
# that shows a few heartbeats.
SOAK_SECONDS = Range(3, 86400)
RULE = "rule"  # the field metadata key that makes a dataclass field a config key


def setting(default: Any, rule: Validator) -> Any:
    """A config key, declared once: its default and the rule its YAML value must pass."""
    return field(default=default, metadata={RULE: rule})


def rules(cls: type) -> dict[str, Validator]:
    """The config keys of a settings dataclass and their rules, in declaration order."""
    return {f.name: f.metadata[RULE] for f in fields(cls) if RULE in f.metadata}


@dataclass(frozen=True, kw_only=True)
class ClientSettings:
    """The Gateway settings an IBKRClient reads as they are (ClientOptions extends this class;
    the reconnect_* settings below become its ReconnectPolicy)."""

    connect_timeout: float = setting(10.0, Range(0, 600, low_open=True))
    # ib_async can leave a reqCurrentTime unanswered when sent < ~1 s after the previous one.
    heartbeat_interval: float = setting(10.0, Range(1, 3600))
    heartbeat_timeout: float = setting(5.0, Range(0, 600, low_open=True))
    allow_live: bool = setting(False, _boolean)


@dataclass(frozen=True, kw_only=True)
class GatewayConfig(ClientSettings):
    name: str = setting("paper", _gateway_name)
    account: str = setting("DUO779750", _text)
    host: str = setting("127.0.0.1", _text)
    port: int = setting(4002, PORT)
    client_id: int = setting(1, CLIENT_ID)
    reconnect_delay: float = setting(10.0, Range(0, 3600))
    max_reconnect_attempts: int = setting(5, Range(0, 1000, integer=True))
    # Reconnecting never gives up while the port refuses; this total budget (seconds from the
    # drop, None = never) is the only limit. 15 min: a daily auto-restart takes ~35-80 s and a
    # Sunday cold restart with a 2FA login minutes; beyond that a person has to act.
    give_up_after: float | None = setting(900.0, _optional(Range(0, 7 * 86400, low_open=True)))

    def client_id_for(self, role: ClientRole) -> int:
        return self.client_id + role


@dataclass(frozen=True)
class TelegramConfig:
    token: str | None = field(default=None, repr=False)  # a secret: kept out of logs and reprs
    allowed_chat_ids: frozenset[int] = setting(frozenset(), _id_set)  # groups have negative ids
    allowed_user_ids: frozenset[int] = setting(frozenset(), _id_set)
    api_base_url: str | None = setting(None, _optional_text)
    progress_interval: float = setting(5.0, Range(1, 3600))  # Telegram rate-limits message edits


@dataclass(frozen=True)
class SoakConfig:
    duration: float = setting(600.0, SOAK_SECONDS)
    heartbeat_interval: float = setting(5.0, Range(1, 3600))
    progress_interval: float = setting(30.0, Range(0, 3600, low_open=True))


@dataclass(frozen=True)
class ChecksConfig:
    reconnect_within: float = setting(30.0, Range(0, 3600, low_open=True))
    # A data farm broken at connect and OK within this many seconds is only a blip.
    farm_grace: float = setting(5.0, Range(0, 600))
    operator_timeout: float = setting(120.0, Range(0, 86400, low_open=True))
    stop_on_failure: bool = setting(False, _boolean)


@dataclass(frozen=True)
class LoggingConfig:
    level: str = setting("INFO", _level)


@dataclass(frozen=True)
class WatchConfig:
    """The always-on watch (bot/watch): who is told, when, and IBKR's expected windows."""

    alert_chat_ids: frozenset[int] = setting(frozenset(), _id_set)
    down_after: float = setting(3.0, Range(0, 3600))  # a drop shorter than this sends nothing
    # "still down" reminders until someone acknowledges; Gatus' floor is 5 min, one a minute the most anyone wants.
    remind_every: float = setting(900.0, Range(60, 86400))
    flap_count: int = setting(6, Range(2, 1000, integer=True))  # more changes within flap_window: flapping
    flap_window: float = setting(600.0, Range(1, 86400))
    flap_quiet: float = setting(300.0, Range(1, 86400))  # flapping ends once up or down this long
    farm_grace: float = setting(60.0, Range(0, 3600))  # a farm broken longer: a quiet warning
    grace: float = setting(300.0, Range(0, 86400))  # still down this long after a window: an outage
    # An API still not ready this long after a restart is a login screen (initialising takes seconds).
    login_settle: float = setting(30.0, Range(0, 3600))
    login_timeout: float = setting(180.0, Range(1, 3600))  # IBC's 2FA wait (SecondFactorAuthenticationTimeout)
    relogin_reminder: float = setting(3600.0, Range(0, 6 * 86400))  # before Sunday's token expiry; 0: none
    region: str = setting("north_america", _region)  # IBKR's reset windows when ``expected`` is not given
    expected: tuple[Window, ...] | None = setting(None, _windows)
    time_zone: str = setting("UTC", _zone_name)  # the zone alerts show times in

    @property
    def schedule(self) -> Schedule:
        windows = self.expected if self.expected is not None else default_windows(self.region)
        return Schedule(windows, self.grace, self.relogin_reminder)


@dataclass(frozen=True)
class OutboxConfig:
    # More pending than this for one chat after an outage: one digest instead.
    digest_after: int = setting(10, Range(1, 10_000, integer=True))
    # The first retry's delay; it doubles up to retry_max.
    retry_initial: float = setting(1.0, Range(0, 3600, low_open=True))
    # Short: a refused connection costs nothing, and Telegram's return is seen at once.
    retry_max: float = setting(3.0, Range(0, 3600, low_open=True))
    # For unexpected answers; an unreachable Telegram is retried forever.
    max_attempts: int = setting(5, Range(1, 1000, integer=True))
    send_timeout: float = setting(20.0, Range(0, 600, low_open=True))
    # Seconds between messages to one chat (Telegram allows about 1/s).
    chat_interval: float = setting(1.0, Range(0, 3600))
    group_per_minute: int = setting(20, Range(1, 10_000, integer=True))
    overall_per_second: int = setting(30, Range(1, 10_000, integer=True))


@dataclass(frozen=True)
class SelfcheckConfig:
    # A dead man's switch (e.g. Healthchecks): requested while gwbot is healthy.
    ping_url: str | None = setting(None, _optional_url)
    every: float = setting(60.0, Range(1, 86400))


@dataclass(frozen=True)
class Config:
    gateways: tuple[GatewayConfig, ...] = (GatewayConfig(),)  # the default (``ibkr``) first
    telegram: TelegramConfig = TelegramConfig()
    data_dir: Path = Path("data")
    soak: SoakConfig = SoakConfig()
    checks: ChecksConfig = ChecksConfig()
    logging: LoggingConfig = LoggingConfig()
    watch: WatchConfig = WatchConfig()
    outbox: OutboxConfig = OutboxConfig()
    selfcheck: SelfcheckConfig = SelfcheckConfig()
    source: Path | None = None

    @property
    def gateway_names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.gateways)

    def gateway(self, name: str | None = None) -> GatewayConfig:
        """A Gateway by name; None is the default (the ``ibkr`` section)."""
        found = self.gateways[0] if name is None else next((g for g in self.gateways if g.name == name), None)
        if found is None:
            raise ConfigError(f"unknown Gateway {_show(name)}; configured: {', '.join(self.gateway_names)}")
        return found

    def public_dict(self) -> dict[str, Any]:
        """Plain JSON-able settings without secrets, stored with every run."""
        def plain(value: Any) -> Any:
            return sorted(value) if isinstance(value, frozenset) else str(value) if isinstance(value, Path) else value

        out = asdict(self, dict_factory=lambda items: {key: plain(value) for key, value in items})
        del out["telegram"]["token"]
        return out


# A ``gateways.NAME`` entry takes its name from the key, so ``name`` is not one of its keys.
OVERRIDE_KEYS = {k: v for k, v in rules(GatewayConfig).items() if k != "name"}
SECTIONS: dict[str, type] = {f.name: type(f.default) for f in fields(Config) if is_dataclass(f.default)}
SCALARS: dict[str, Validator] = {"data_dir": _text}
TOP_KEYS = ("ibkr", "gateways", *SCALARS, *SECTIONS)


def _show(value: Any) -> str:
    """A short one-line repr of a bad value (a pasted blob must not flood the error line)."""
    short = reprlib.Repr()
    short.maxstring, short.maxother, short.maxlist = 60, 60, 6
    return short.repr(value)


def _key_path(path: str, key: Any) -> str:
    shown = str(key) if str(key).isprintable() else _show(key)  # a key with a newline must not break the line
    return f"{path}.{shown}" if path else shown


def _kind(value: Any) -> str:
    names = {list: "list", dict: "mapping", str: "string", int: "integer", float: "number", bool: "boolean"}
    return names.get(type(value), type(value).__name__)


class _Loader:
    """Validates one parsed file; ``where`` is the file name that prefixes every error."""

    def __init__(self, where: str) -> None:
        self.where = where

    def error(self, path: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where}: {path}: {message}" if path else f"{self.where}: {message}")

    def mapping(self, value: Any, path: str) -> dict[Any, Any]:
        """A section's mapping; an empty section (``ibkr:``) is the same as ``{}``."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            where = "" if path else " at the top level"
            raise self.error(path, f"expected a mapping{where}, got {_kind(value)}")
        return value

    def known(self, raw: Mapping[Any, Any], allowed: tuple[str, ...] | Mapping[str, Any], path: str) -> None:
        for key in raw:
            at = _key_path(path, key)
            if key == "token" and path == "telegram":
                raise self.error(at, f"never put the bot token in a file; set {ENV_TOKEN} instead")
            if key not in allowed:
                close = difflib.get_close_matches(str(key), list(allowed), n=1)
                raise self.error(at, "unknown key" + (f" (did you mean '{close[0]}'?)" if close else ""))

    def fields(self, raw: Mapping[Any, Any], spec: Mapping[str, Validator], path: str) -> dict[str, Any]:
        """Check every key of ``raw`` against ``spec``; keys not given keep the dataclass default."""
        self.known(raw, spec, path)
        out = {}
        for key, value in raw.items():
            try:
                out[key] = spec[key](value)
            except _Bad as bad:
                raise self.error(_key_path(path, key), f"expected {bad.expected}, got {_show(value)}") from None
        return out

    def gateways(self, doc: Mapping[Any, Any]) -> tuple[GatewayConfig, ...]:
        base = self.fields(self.mapping(doc.get("ibkr"), "ibkr"), rules(GatewayConfig), "ibkr")
        result = [GatewayConfig(**base)]
        for name, overrides in self.mapping(doc.get("gateways"), "gateways").items():
            path = _key_path("gateways", name)
            self.fields({name: name}, {name: _gateway_name}, "gateways")  # an error names gateways.NAME
            raw = self.mapping(overrides, path)
            if "name" in raw:
                raise self.error(_key_path(path, "name"), f"not allowed here: the Gateway's name is its key, '{name}'")
            if name in (g.name for g in result):
                raise self.error(path, f"Gateway name '{name}' is used twice")
            gw = GatewayConfig(**(base | self.fields(raw, OVERRIDE_KEYS, path) | {"name": name}))
            self.ids_apart(gw, result, f"{path}.client_id")
            result.append(gw)
        return tuple(result)

    def ids_apart(self, gw: GatewayConfig, others: list[GatewayConfig], path: str) -> None:
        """Two parts of gwbot on one Gateway must never share a client id (the second gets 326)."""
        for other in (o for o in others if (o.host, o.port) == (gw.host, gw.port)):
            clash = next(((mine, theirs) for mine in ClientRole for theirs in ClientRole
                          if gw.client_id_for(mine) == other.client_id_for(theirs)), None)
            if clash is None:
                continue
            mine, theirs = (role.name.lower().replace("_", " ") for role in clash)
            gaps = ", ".join(map(str, sorted({abs(a - b) for a in ClientRole for b in ClientRole})))
            raise self.error(path, f"{gw.client_id} collides with Gateway '{other.name}' on {gw.host}:{gw.port} "
                                   f"(its {mine} id {gw.client_id_for(clash[0])} is {other.name}'s {theirs} id); "
                                   f"pick a client_id that differs from {other.client_id} by none of {gaps}")

    def load(self, doc: Any, base_dir: Path, env: Mapping[str, str], source: Path | None) -> Config:
        doc = self.mapping(doc, "")
        self.known(doc, TOP_KEYS, "")
        sections = {name: cls(**self.fields(self.mapping(doc.get(name), name), rules(cls), name))
                    for name, cls in SECTIONS.items()}
        sections["telegram"] = replace(sections["telegram"], token=env.get(ENV_TOKEN, "").strip() or None)
        scalars = self.fields({k: v for k, v in doc.items() if k in SCALARS}, SCALARS, "")
        data_dir = self.data_dir(scalars.get("data_dir"), base_dir)
        return Config(gateways=self.gateways(doc), data_dir=data_dir, source=source, **sections)

    def data_dir(self, given: str | None, base_dir: Path) -> Path:
        """Not set: the project's data/, wherever gwbot runs from and whichever file configures it.
        Set: relative to the config file's folder. Only the last folder is ever created, so a
        mistyped path is an error instead of a new tree (or a folder at the filesystem root)."""
        if given is None:
            return PROJECT_DATA_DIR
        path = (base_dir / Path(given).expanduser()).resolve()
        if not path.exists() and not path.parent.is_dir():
            raise self.error("data_dir", f"{path.parent} does not exist; create it, or set data_dir to a folder "
                                         "that exists")
        return path


def _check_unique_keys(node: yaml.Node | None, where: str, path: str = "") -> None:
    """YAML lets a key appear twice and keeps the last; in a config that hides a mistake."""
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            at = _key_path(path, key.value)
            line = key.start_mark.line + 1
            if key.value in first_line:
                raise ConfigError(f"{where}: {at}: given twice, at lines {first_line[key.value]} and {line} "
                                  "(keep one)")
            first_line[key.value] = line
            _check_unique_keys(value, where, at)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_unique_keys(item, where, path)


def token_error(token: str) -> str | None:
    """Why a bot token cannot be right, told before any request carries it; None if it looks right."""
    if TOKEN_SHAPE.fullmatch(token):
        return None
    return (f"{ENV_TOKEN} does not look like a bot token (digits:letters, like 123456789:AAH...); "
            "copy it again from @BotFather")


def _parse(source: Path) -> Any:
    """The file's YAML document; every failure becomes one ConfigError line."""
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source.name}: file not found ({source.resolve()})") from None
    except OSError as e:
        raise ConfigError(f"{source.name}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source.name}: not UTF-8 text (byte {e.start})") from None
    try:
        _check_unique_keys(yaml.compose(text, Loader=yaml.SafeLoader), source.name)
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())  # some are multi-line
        raise ConfigError(f"{source.name}: invalid YAML{at}: {problem}") from None


def load_config(path: str | Path | None = None, *, env: Mapping[str, str] | None = None) -> Config:
    """Load and validate the config: --config wins, then $GWBOT_CONFIG, then ./config/config.yaml if
    present, else built-in defaults. Raises ConfigError."""
    env = os.environ if env is None else env
    given = path or env.get(ENV_CONFIG)
    source = Path(given) if given else DEFAULT_PATH if DEFAULT_PATH.is_file() else None
    if source is None:
        return _Loader("defaults").load({}, PROJECT_DATA_DIR.parent, env, None)
    return _Loader(source.name).load(_parse(source), source.resolve().parent, env, source.resolve())
