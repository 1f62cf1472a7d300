"""gwbot's configuration: one YAML file, validated into frozen dataclasses.

Every key is optional (an empty file gives the seed's values). Errors are one line naming the
file, the key path and what was expected: ``config.yaml: ibkr.port: expected an integer
1-65535, got 'abc'``. Unknown keys are errors, so a typo never silently falls back to a default.
The Telegram token comes only from the TELEGRAM_BOT_TOKEN environment variable.
"""

from __future__ import annotations

import difflib
import operator
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from bot import config_rules as valid
from bot.client_ids import ClientRole
from bot.config_file import FileError, read_yaml
from bot.config_rules import (  # noqa: F401 -- re-exported: every edge imports the rules from here
    CLIENT_ID,
    GATEWAY_NAME,
    NUMBER,
    PORT,
    RUN_ID,
    SOAK_SECONDS,
    Invalid,
    Range,
    Validator,
    key_path,
    show,
)
from bot.watch.schedule import Recurring, Schedule, Window, default_windows

ENV_CONFIG = "GWBOT_CONFIG"
ENV_TOKEN = "TELEGRAM_BOT_TOKEN"
DEFAULT_PATH = Path("config") / "config.yaml"
# Where the database lives unless a config file says otherwise: the project's data/ beside config/.
PROJECT_DATA_DIR = Path(__file__).resolve().parents[1] / "data"
# Telegram's documented shape (bot id, colon, secret); Telegram promises nothing stricter.
TOKEN_SHAPE = re.compile(r"\d+:[A-Za-z0-9_-]{30,}")
class ConfigError(Exception):
    """One line that says which file, which key, and what is wrong."""


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
    allow_live: bool = setting(False, valid.boolean)


@dataclass(frozen=True)
class IbcAddress:
    """Where IBC's command server listens (``CommandServerPort`` in IBC's config.ini)."""

    port: int = setting(7462, PORT)
    host: str | None = setting(None, valid.optional(valid.host, "null (the Gateway's host) or " + valid.HOST))


# ``ibc: {port, host}`` under a Gateway: port required, host the Gateway's unless given; absent or null: off.
IBC = valid.Section(IbcAddress, lambda: rules(IbcAddress), required=("port",),
                    what="IBC's command server, like {port: 7462} (CommandServerPort in IBC's config.ini)")


@dataclass(frozen=True, kw_only=True)
class GatewayConfig(ClientSettings):
    name: str = setting("paper", valid.gateway_name)
    account: str = setting("DUO779750", valid.account)
    host: str = setting("127.0.0.1", valid.host)
    port: int = setting(4002, PORT)
    client_id: int = setting(1, CLIENT_ID)
    reconnect_delay: float = setting(10.0, Range(0, 3600))
    max_reconnect_attempts: int = setting(5, Range(0, 1000, integer=True))
    # Reconnecting never gives up while the port refuses; this total budget (seconds from the
    # drop, None = never) is the only limit. 15 min: a daily auto-restart takes ~35-80 s and a
    # Sunday cold restart with a 2FA login minutes; beyond that a person has to act.
    give_up_after: float | None = setting(900.0, valid.optional_range(Range(0, 7 * 86400, low_open=True)))
    # None: no IBC, so no drills and no [Restart] buttons. (setting() is field(): nothing shared is created.)
    ibc: IbcAddress | None = setting(None, IBC)  # noqa: RUF009

    def client_id_for(self, role: ClientRole) -> int:
        return self.client_id + role


@dataclass(frozen=True)
class TelegramConfig:
    token: str | None = field(default=None, repr=False)  # a secret: kept out of logs and reprs
    allowed_chat_ids: frozenset[int] = setting(frozenset(), valid.telegram_ids)  # groups have negative ids
    allowed_user_ids: frozenset[int] = setting(frozenset(), valid.telegram_ids)
    api_base_url: str | None = setting(None, valid.api_base_url)
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
    stop_on_failure: bool = setting(False, valid.boolean)
    # A drill: IBC's RESTART accepted, the Gateway down by then (IBC restarts at the next minute) ...
    drill_down_within: float = setting(180.0, Range(0, 3600, low_open=True))
    # ... and, once down, the drill's client back by then; past it the drill fails and the outage is real.
    drill_back_within: float = setting(300.0, Range(0, 3600, low_open=True))


@dataclass(frozen=True)
class LoggingConfig:
    level: str = setting("INFO", valid.log_level)


@dataclass(frozen=True)
class WatchConfig:
    """The always-on watch (bot/watch): who is told, when, and IBKR's expected windows."""

    alert_chat_ids: frozenset[int] = setting(frozenset(), valid.telegram_ids)
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
    region: str = setting("north_america", valid.region)  # IBKR's reset windows when ``expected`` is not given
    expected: tuple[Window, ...] | None = setting(None, valid.windows)
    time_zone: str = setting("UTC", valid.zone)  # the zone alerts show times in

    @property
    def schedule(self) -> Schedule:
        windows = self.expected if self.expected is not None else default_windows(self.region)
        return Schedule(windows, self.grace, self.relogin_reminder)


@dataclass(frozen=True)
class DrillConfig:
    """Scheduled drills: IBC's RESTART at set times on every Gateway with ``ibc`` configured."""

    schedule: Recurring | None = setting(None, valid.recurring)  # noqa: RUF009 -- None: no scheduled drills
    # Never inside these (a squad's trading hours), nor inside the watch's expected windows.
    trading: tuple[Window, ...] = setting((), valid.window_list)
    allow_live: bool = setting(False, valid.boolean)  # a live account's Gateway is restarted only if true


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
    ping_url: str | None = setting(None, valid.ping_url)
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
    drill: DrillConfig = DrillConfig()
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
            raise ConfigError(f"unknown Gateway {show(name)}; configured: {', '.join(self.gateway_names)}")
        return found

    def public_dict(self) -> dict[str, Any]:
        """Plain JSON-able settings without secrets, stored with every run."""
        def plain(value: Any) -> Any:
            return sorted(value) if isinstance(value, frozenset) else str(value) if isinstance(value, Path) else value

        out = asdict(self, dict_factory=lambda items: {key: plain(value) for key, value in items})
        del out["telegram"]["token"]
        return out


# Keys of one section whose values must keep an order: (section, lower key, strictly, upper key).
IN_ORDER = (
    ("outbox", "retry_initial", False, "retry_max"),  # the backoff doubles from the first delay up to the most
    ("watch", "login_settle", True, "login_timeout"),  # a 2FA alert after IBC stopped waiting is no use
)

# A ``gateways.NAME`` entry takes its name from the key, so ``name`` is not one of its keys.
OVERRIDE_KEYS = {k: v for k, v in rules(GatewayConfig).items() if k != "name"}
SECTIONS: dict[str, type] = {f.name: type(f.default) for f in fields(Config) if is_dataclass(f.default)}
SCALARS: dict[str, Validator] = {"data_dir": valid.folder}
TOP_KEYS = ("ibkr", "gateways", *SCALARS, *SECTIONS)


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
            at = key_path(path, key)
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
            section = spec[key]
            if isinstance(section, valid.Section) and value is not None:
                out[key] = self.section(value, section, key_path(path, key))
                continue
            try:
                out[key] = spec[key](value)
            except Invalid as bad:
                raise self.error(key_path(path, key), f"expected {bad.expected}, got {show(value)}") from None
        return out

    def section(self, value: Any, section: valid.Section, path: str) -> Any:
        if not isinstance(value, dict):
            raise self.error(path, f"expected null (off) or a mapping: {section.what}, got {show(value)}")
        keys = section.keys()
        self.known(value, keys, path)  # a misspelt key is named as such, not reported as one missing
        missing = next((k for k in section.required if k not in value), None)
        if missing is not None:
            raise self.error(key_path(path, missing), f"missing; {path.rsplit('.', 1)[-1]} is {section.what}")
        return section.build(**self.fields(value, keys, path))

    def gateways(self, doc: Mapping[Any, Any]) -> tuple[GatewayConfig, ...]:
        base = self.fields(self.mapping(doc.get("ibkr"), "ibkr"), rules(GatewayConfig), "ibkr")
        result = [self.ibc_host(GatewayConfig(**base), "ibkr")]
        for name, overrides in self.mapping(doc.get("gateways"), "gateways").items():
            path = key_path("gateways", name)
            self.fields({name: name}, {name: valid.gateway_name}, "gateways")  # an error names gateways.NAME
            raw = self.mapping(overrides, path)
            if "name" in raw:
                raise self.error(key_path(path, "name"), f"not allowed here: the Gateway's name is its key, '{name}'")
            if name in (g.name for g in result):
                raise self.error(path, f"Gateway name '{name}' is used twice")
            gw = self.ibc_host(GatewayConfig(**(base | self.fields(raw, OVERRIDE_KEYS, path) | {"name": name})), path)
            self.ids_apart(gw, result, f"{path}.client_id")
            result.append(gw)
        return tuple(result)

    def ibc_host(self, gw: GatewayConfig, path: str) -> GatewayConfig:
        """IBC runs beside its Gateway unless ``ibc.host`` says otherwise; its port is never the API's."""
        if gw.ibc is None:
            return gw
        ibc = gw.ibc if gw.ibc.host is not None else replace(gw.ibc, host=gw.host)
        if (ibc.host, ibc.port) == (gw.host, gw.port):
            raise self.error(f"{path}.ibc.port", f"{ibc.port} is the Gateway's API port; IBC's command server listens "
                                                 "on CommandServerPort from IBC's config.ini (7462 by convention)")
        return replace(gw, ibc=ibc)

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
        self.in_order(doc, sections)
        scalars = self.fields({k: v for k, v in doc.items() if k in SCALARS}, SCALARS, "")
        data_dir = self.data_dir(scalars.get("data_dir"), base_dir)
        return Config(gateways=self.gateways(doc), data_dir=data_dir, source=source, **sections)

    def in_order(self, doc: Mapping[Any, Any], sections: Mapping[str, Any]) -> None:
        """The error names the key the file gives (the upper one if it gives both)."""
        for name, low, strictly, high in IN_ORDER:
            values = sections[name]
            lo, hi = getattr(values, low), getattr(values, high)
            if (operator.lt if strictly else operator.le)(lo, hi):
                continue
            given = self.mapping(doc.get(name), name)
            if high in given or low not in given:
                bound = f"{'more than' if strictly else 'at least'} {name}.{low} ({lo:g})"
                raise self.error(f"{name}.{high}", f"expected {bound}, got {hi:g}")
            bound = f"{'less than' if strictly else 'at most'} {name}.{high} ({hi:g})"
            raise self.error(f"{name}.{low}", f"expected {bound}, got {lo:g}")

    def data_dir(self, given: str | None, base_dir: Path) -> Path:
        """Not set: the project's data/, wherever gwbot runs from and whichever file configures it.
        Set: relative to the config file's folder. Only the last folder is ever created, so a
        mistyped path is an error instead of a new tree (or a folder at the filesystem root)."""
        if given is None:
            return PROJECT_DATA_DIR
        try:
            path = (base_dir / Path(given).expanduser()).resolve()
            is_file, parent_missing = path.exists() and not path.is_dir(), not path.parent.is_dir()
        except RuntimeError:  # ~someone with no such user or home, or a symlink loop
            raise self.error("data_dir", f"cannot find the folder {show(given)} (no such user, home or a symlink "
                                         "loop); write the path out") from None
        except OSError as e:  # a name too long, a parent gwbot may not enter
            raise self.error("data_dir", f"cannot use {show(given)}: {e.strerror}; set data_dir to a folder "
                                         "gwbot can use") from None
        if is_file:
            raise self.error("data_dir", f"{path} is a file, not a folder; set data_dir to a folder")
        if parent_missing and not path.exists():
            raise self.error("data_dir", f"{path.parent} does not exist; create it, or set data_dir to a folder "
                                         "that exists")
        return path


def token_error(token: str) -> str | None:
    """Why a bot token cannot be right, told before any request carries it; None if it looks right."""
    if TOKEN_SHAPE.fullmatch(token):
        return None
    return (f"{ENV_TOKEN} does not look like a bot token (digits:letters, like 123456789:AAH...); "
            "copy it again from @BotFather")


def _parse(source: Path) -> Any:
    try:
        return read_yaml(source)
    except FileError as e:
        raise ConfigError(f"{source.name}: {e}") from None


def load_config(path: str | Path | None = None, *, env: Mapping[str, str] | None = None) -> Config:
    """Load and validate the config: --config wins, then $GWBOT_CONFIG, then ./config/config.yaml if
    present, else built-in defaults. Raises ConfigError."""
    env = os.environ if env is None else env
    given = path or env.get(ENV_CONFIG)
    source = Path(given) if given else DEFAULT_PATH if DEFAULT_PATH.is_file() else None
    if source is None:
        return _Loader("defaults").load({}, PROJECT_DATA_DIR.parent, env, None)
    return _Loader(source.name).load(_parse(source), source.resolve().parent, env, source.resolve())
