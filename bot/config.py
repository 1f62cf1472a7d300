"""gwbot's configuration: one YAML file, validated into frozen dataclasses.

Every key is optional (an empty file gives the seed's values). Errors are one line naming the
file, the key path and what was expected: ``config.yaml: ibkr.port: expected an integer
1-65535, got 'abc'``. Unknown keys are errors, so a typo never silently falls back to a default.
The Telegram token comes only from the TELEGRAM_BOT_TOKEN environment variable.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

ENV_CONFIG = "GWBOT_CONFIG"
ENV_TOKEN = "TELEGRAM_BOT_TOKEN"
DEFAULT_PATH = Path("config") / "config.yaml"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(Exception):
    """One line that says which file, which key, and what is wrong."""


@dataclass(frozen=True)
class GatewayConfig:
    name: str = "paper"
    account: str = "DUO779750"
    host: str = "127.0.0.1"
    port: int = 4002
    client_id: int = 1
    reconnect_delay: float = 10.0
    max_reconnect_attempts: int = 5
    connect_timeout: float = 10.0
    heartbeat_interval: float = 10.0
    heartbeat_timeout: float = 5.0
    allow_live: bool = False


@dataclass(frozen=True)
class TelegramConfig:
    token: str | None = field(default=None, repr=False)
    allowed_chat_ids: frozenset[int] = frozenset()
    allowed_user_ids: frozenset[int] = frozenset()
    api_base_url: str | None = None
    progress_interval: float = 5.0


@dataclass(frozen=True)
class SoakConfig:
    duration: float = 600.0
    heartbeat_interval: float = 5.0
    progress_interval: float = 30.0


@dataclass(frozen=True)
class ChecksConfig:
    reconnect_within: float = 30.0
    operator_timeout: float = 120.0
    stop_on_failure: bool = False


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"


@dataclass(frozen=True)
class Config:
    gateways: tuple[GatewayConfig, ...] = (GatewayConfig(),)
    telegram: TelegramConfig = TelegramConfig()
    data_dir: Path = Path("data")
    soak: SoakConfig = SoakConfig()
    checks: ChecksConfig = ChecksConfig()
    logging: LoggingConfig = LoggingConfig()
    source: Path | None = None

    @property
    def gateway_names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.gateways)

    def gateway(self, name: str | None = None) -> GatewayConfig:
        """A Gateway by name; None is the default (the ``ibkr`` section)."""
        if name is None:
            return self.gateways[0]
        for g in self.gateways:
            if g.name == name:
                return g
        raise ConfigError(f"unknown Gateway '{name}'; configured: {', '.join(self.gateway_names)}")

    def public_dict(self) -> dict[str, Any]:
        """Plain JSON-able settings without secrets, stored with every run."""
        out = asdict(self)
        out["telegram"].pop("token", None)
        out["telegram"]["allowed_chat_ids"] = sorted(self.telegram.allowed_chat_ids)
        out["telegram"]["allowed_user_ids"] = sorted(self.telegram.allowed_user_ids)
        out["data_dir"] = str(self.data_dir)
        out["source"] = str(self.source) if self.source else None
        return out


# ---------------------------------------------------------------- validators
# Each takes the raw YAML value and returns the typed value or a description of what was expected.
Validator = Callable[[Any], Any]


class _Bad(Exception):
    def __init__(self, expected: str) -> None:
        self.expected = expected


def _integer(low: int, high: int | None = None) -> Validator:
    expected = f"an integer {low}-{high}" if high is not None else f"an integer >= {low}"

    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
            raise _Bad(expected)
        return v
    return check


def _number(low: float, *, inclusive: bool = True) -> Validator:
    expected = f"a number {'>=' if inclusive else '>'} {low:g}"

    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or v < low or (not inclusive and v == low):
            raise _Bad(expected)
        return float(v)
    return check


def _text(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _Bad("a non-empty string")
    return v


def _optional_text(v: Any) -> str | None:
    return None if v is None else _text(v)


def _boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Bad("true or false")
    return v


def _id_set(v: Any) -> frozenset[int]:
    if not isinstance(v, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in v):
        raise _Bad("a list of integers")
    return frozenset(v)


def _level(v: Any) -> str:
    if not isinstance(v, str) or v.upper() not in LOG_LEVELS:
        raise _Bad(f"one of {', '.join(LOG_LEVELS)}")
    return v.upper()


GATEWAY_KEYS: dict[str, Validator] = {
    "name": _text,
    "account": _text,
    "host": _text,
    "port": _integer(1, 65535),
    "client_id": _integer(0, 2**31 - 1),
    "reconnect_delay": _number(0),
    "max_reconnect_attempts": _integer(0),
    "connect_timeout": _number(0, inclusive=False),
    # ib_async users report reqCurrentTime unanswered when sent < ~1 s after the previous one.
    "heartbeat_interval": _number(1),
    "heartbeat_timeout": _number(0, inclusive=False),
    "allow_live": _boolean,
}
SECTIONS: dict[str, tuple[type, dict[str, Validator]]] = {
    "telegram": (TelegramConfig, {
        "allowed_chat_ids": _id_set,
        "allowed_user_ids": _id_set,
        "api_base_url": _optional_text,
        "progress_interval": _number(1),
    }),
    "soak": (SoakConfig, {
        "duration": _number(0, inclusive=False),
        "heartbeat_interval": _number(1),
        "progress_interval": _number(0, inclusive=False),
    }),
    "checks": (ChecksConfig, {
        "reconnect_within": _number(0, inclusive=False),
        "operator_timeout": _number(0, inclusive=False),
        "stop_on_failure": _boolean,
    }),
    "logging": (LoggingConfig, {"level": _level}),
}
TOP_KEYS = ("ibkr", "gateways", "data_dir", *SECTIONS)


class _Loader:
    """Validates one parsed file; ``where`` is the file name that prefixes every error."""

    def __init__(self, where: str) -> None:
        self.where = where

    def error(self, path: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where}: {path}: {message}" if path else f"{self.where}: {message}")

    def mapping(self, value: Any, path: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            what = "at the top level" if not path else ""
            raise self.error(path, f"expected a mapping{' ' + what if what else ''}, got {_kind(value)}")
        return value

    def known(self, raw: Mapping[str, Any], allowed: tuple[str, ...] | Mapping[str, Any], path: str) -> None:
        for key in raw:
            if key == "token" and path == "telegram":
                raise self.error("telegram.token", f"never put the bot token in a file; set {ENV_TOKEN} instead")
            if key not in allowed:
                close = difflib.get_close_matches(str(key), list(allowed), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise self.error(f"{path}.{key}" if path else str(key), f"unknown key{hint}")

    def fields(self, raw: Mapping[str, Any], spec: Mapping[str, Validator], path: str) -> dict[str, Any]:
        self.known(raw, spec, path)
        out = {}
        for key, value in raw.items():
            try:
                out[key] = spec[key](value)
            except _Bad as bad:
                raise self.error(f"{path}.{key}", f"expected {bad.expected}, got {value!r}") from None
        return out

    def gateways(self, doc: Mapping[str, Any]) -> tuple[GatewayConfig, ...]:
        base = self.fields(self.mapping(doc.get("ibkr"), "ibkr"), GATEWAY_KEYS, "ibkr")
        default = GatewayConfig(**base)
        extra = self.mapping(doc.get("gateways"), "gateways")
        result = [default]
        for name, overrides in extra.items():
            path = f"gateways.{name}"
            values = self.fields(self.mapping(overrides, path), {k: v for k, v in GATEWAY_KEYS.items() if k != "name"}, path)
            if str(name) in (g.name for g in result):
                raise self.error(path, f"Gateway name '{name}' is used twice")
            result.append(GatewayConfig(**(base | values | {"name": str(name)})))
        return tuple(result)

    def load(self, doc: Any, base_dir: Path, env: Mapping[str, str], source: Path | None) -> Config:
        doc = self.mapping(doc, "")
        self.known(doc, TOP_KEYS, "")
        sections = {}
        for name, (cls, spec) in SECTIONS.items():
            sections[name] = cls(**self.fields(self.mapping(doc.get(name), name), spec, name))
        sections["telegram"] = TelegramConfig(**(asdict(sections["telegram"]) | {"token": env.get(ENV_TOKEN) or None}))
        data_dir = doc.get("data_dir", "data")
        if not isinstance(data_dir, str) or not data_dir:
            raise self.error("data_dir", f"expected a folder path, got {data_dir!r}")
        return Config(gateways=self.gateways(doc), data_dir=(base_dir / data_dir).resolve(), source=source, **sections)


def _kind(value: Any) -> str:
    return {list: "list", str: "string", int: "integer", float: "number", bool: "boolean"}.get(type(value), type(value).__name__)


def resolve_path(path: str | Path | None, env: Mapping[str, str]) -> Path | None:
    """--config wins, then $GWBOT_CONFIG, then ./config/config.yaml if present, else built-in defaults."""
    if path:
        return Path(path)
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG])
    return DEFAULT_PATH if DEFAULT_PATH.is_file() else None


def load_config(path: str | Path | None = None, *, env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    source = resolve_path(path, env)
    if source is None:
        return _Loader("defaults").load({}, Path.cwd(), env, None)
    loader = _Loader(source.name)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source.name}: file not found ({source.resolve()})") from None
    except OSError as e:
        raise ConfigError(f"{source.name}: cannot read: {e.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{source.name}: invalid YAML{at}: {problem}") from None
    return loader.load(doc, source.resolve().parent, env, source.resolve())
