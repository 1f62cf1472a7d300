"""The rules config values must pass, each declared once and used by every edge that takes the
value: the config file (bot/config.py), the CLI flag that overrides it, a chat argument.

A rule (a ``Validator``) takes a raw YAML value and returns the typed value, or raises ``Invalid``
saying what was expected. ``from_text`` applies one to a typed string (a flag).
"""

from __future__ import annotations

import math
import re
import reprlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bot.client_ids import CLIENT_ID_MAX, ClientRole
from bot.watch.schedule import REGIONS, Recurring, Window, parse_recurring, parse_window, zone_name

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# What a typed number may look like: plain ASCII decimals (int()/float() also take '1_0', '٣', 'nan').
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)


class Invalid(Exception):
    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


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
            return is_int(v) and self.low <= v <= self.high
        # .nan / .inf are valid YAML floats but would make sleeps and timeouts meaningless.
        return ((is_int(v) or isinstance(v, float)) and math.isfinite(v)
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
            raise Invalid(self.expected)
        return v if self.integer else float(v)


Validator = Callable[[Any], Any]


def show(value: Any) -> str:
    """A short one-line repr of a bad value (a pasted blob must not flood the error line)."""
    short = reprlib.Repr()
    short.maxstring, short.maxother, short.maxlist = 60, 60, 6
    return short.repr(value)


def key_path(path: str, key: Any) -> str:
    """``path.key`` for an error line; a key with a newline, or a pasted blob, is shown short."""
    shown = str(key) if str(key).isprintable() and len(str(key)) <= 100 else show(key)
    return f"{path}.{shown}" if path else shown


def from_text(rule: Validator, text: str) -> Any:
    """A typed string (a CLI flag) through a config key's rule; ValueError saying what is expected."""
    if isinstance(rule, Range):
        return rule.parse(text)
    try:
        return rule(text)
    except Invalid as bad:
        raise ValueError(bad.expected) from None


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # YAML's true is an int to Python


def rule(ok: Callable[[Any], bool], expected: str, convert: Callable[[Any], Any] = lambda v: v) -> Validator:
    """A validator: values that pass ``ok``, converted; any other is told what was ``expected``."""
    def check(v: Any) -> Any:
        if not ok(v):
            raise Invalid(expected)
        return convert(v)
    return check


def optional(allowed: Validator, expected: str) -> Validator:
    """``allowed``, or null; ``expected`` says so."""
    def check(v: Any) -> Any:
        if v is None:
            return None
        try:
            return allowed(v)
        except Invalid:
            raise Invalid(expected) from None
    return check


def optional_range(allowed: Range) -> Validator:
    return optional(allowed, f"null or {allowed.expected}")


def _one_word(v: Any, longest: int) -> bool:
    """A string of printable characters without spaces: what a host or an account id is."""
    return isinstance(v, str) and 0 < len(v) <= longest and v.isprintable() and not any(c.isspace() for c in v)


boolean = rule(lambda v: isinstance(v, bool), "true or false")
# Telegram's ids have at most 52 significant bits; 0 is no one's.
TELEGRAM_ID_BITS = 52
telegram_ids = rule(lambda v: isinstance(v, list) and all(is_int(i) and 0 < abs(i) < 2**TELEGRAM_ID_BITS for i in v),
                    "a list of Telegram ids (non-zero integers; groups are negative)", frozenset)
log_level = rule(lambda v: isinstance(v, str) and v.upper() in LOG_LEVELS, f"one of {', '.join(LOG_LEVELS)}",
                 str.upper)
region = rule(lambda v: v in REGIONS, f"one of {', '.join(REGIONS)}")
# A name or address to connect to: an IPv6 address has 2+ colons, so one colon is a "host:port";
# brackets belong to a URL's [::1], not to what getaddrinfo takes.
HOST = "a host name or IP address, like 127.0.0.1 (no spaces, port or URL parts)"
host = rule(lambda v: _one_word(v, 253) and not re.search(r"[/\\@?#\[\]]", v) and v.count(":") != 1, HOST)
account = rule(lambda v: _one_word(v, 64), "an IBKR account id without spaces, like DU1234567")
# One word in chat (PTB splits /status NAME on whitespace, and a number there is read as one) and
# in a shell without quotes (--gateway NAME, no leading '-'); ASCII, so what is typed matches exactly.
GATEWAY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)
gateway_name = rule(lambda v: isinstance(v, str) and bool(GATEWAY_NAME.fullmatch(v)) and not NUMBER.fullmatch(v),
                    "a Gateway name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, not a "
                    "number (so that /status NAME and --gateway NAME reach it)")


def _path(what: str) -> Validator:
    return rule(lambda v: isinstance(v, str) and bool(v.strip()) and "\0" not in v,
                f"{what} (a non-empty string without NUL characters)")


# data_dir is resolved (and checked to be a folder) against the config file's folder at load.
folder, file_path = _path("a folder path"), _path("a file path")


def _http_url(v: Any, query: bool) -> bool:
    if not (isinstance(v, str) and v.isprintable() and not any(c.isspace() for c in v)):
        return False
    try:
        parts = urlsplit(v)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not 0-65535
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and (query or not (parts.query or parts.fragment))


# The Bot API's base: PTB appends the token and the method, so a query or fragment cannot be part of it.
api_base_url = optional(rule(lambda v: _http_url(v, query=False), ""),
                        "an http:// or https:// URL with a host, like http://127.0.0.1:8081/bot (no spaces, "
                        "query or fragment), or null")
ping_url = optional(rule(lambda v: _http_url(v, query=True), ""),
                    "an http:// or https:// URL, like https://hc-ping.com/UUID (no spaces), or null")


@dataclass(frozen=True)
class Section:
    """A key whose value is a small mapping of its own (``ibc: {port: 7462}``), or null: off. The
    loader checks its keys with their own rules, so an error names the inner key (``ibkr.ibc.port``)."""

    build: Callable[..., Any]
    keys: Callable[[], dict[str, Validator]]  # its keys' rules
    required: tuple[str, ...]
    what: str  # what the mapping is, for an error

    def __call__(self, v: Any) -> Any:
        if v is None:
            return None
        raise Invalid(f"null (off) or a mapping: {self.what}")  # the loader checks a mapping itself


def parsed(parse: Callable[[Any], Any]) -> Validator:
    """A validator from a parser that raises ValueError saying what it expects."""
    def check(v: Any) -> Any:
        try:
            return parse(v)
        except ValueError as e:
            raise Invalid(str(e)) from None
    return check


zone = parsed(zone_name)
window = parsed(parse_window)


def windows(v: Any) -> tuple[Window, ...] | None:
    if v is None:
        return None  # IBKR's published windows for watch.region
    if not isinstance(v, list):
        raise Invalid("a list of windows, or null for IBKR's defaults")
    return tuple(window(w) for w in v)


def window_list(v: Any) -> tuple[Window, ...]:
    """Windows with no default behind null: an empty list is none."""
    if not isinstance(v, list):
        raise Invalid("a list of windows like {name, days, start: 'HH:MM', end: 'HH:MM', tz}, or [] for none")
    return tuple(window(w) for w in v)


def recurring(v: Any) -> Recurring | None:
    if v is None:
        return None
    try:
        return parse_recurring(v)
    except ValueError as e:
        raise Invalid(f"null (off) or {e}") from None


PORT = Range(1, 65535, integer=True)
# Every role's id (configured id + its offset, bot/client_ids.py) must still be a valid client id.
CLIENT_ID = Range(0, CLIENT_ID_MAX - max(ClientRole), integer=True)
RUN_ID = Range(1, 2**63 - 1, integer=True, wording="a run number (gwbot history lists them)")  # SQLite's rowid
# The checklist asks for 10+ minutes; a day is the longest that still makes sense, 3 s the shortest
# that shows a few heartbeats.
SOAK_SECONDS = Range(3, 86400)
