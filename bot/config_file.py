"""Reading the config file into plain YAML data, refusing what would take long or break parsing.

A gwbot config is a few kB with about a hundred values, so limits far above that cost a real file
nothing and turn a pasted blob, a billion-laughs alias bomb or a recursive alias into one line
instead of minutes of parsing or a RecursionError. The events are counted with libyaml's parser
(fast in C) before anything is built from them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import yaml

from bot.config_rules import key_path

MAX_BYTES = 1_000_000
# Values after aliases are expanded: what the configuration holds, however it is written.
MAX_VALUES = 10_000
MAX_DEPTH = 20  # the config's deepest value (watch.expected[i].start) is 3 levels down

# libyaml if PyYAML was built with it; the pure-Python parser is ~20x slower but the limits hold.
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"


class FileError(Exception):
    """What is wrong with the file as a whole, or at a line of it (without the file's name)."""


class _SafeLoader(_Base):
    """YAML 1.1 reads 04002 as octal (2050), 1:6:40 as base 60 (4000) and 1_0 as 10: a mistyped
    number would load as another one. Numbers here are decimal, as in YAML 1.2; others stay text,
    which the key's rule then refuses (and 23:45 is the time it looks like)."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[Any]]] = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
        for first, resolvers in _Base.yaml_implicit_resolvers.items()
    }

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # Some scalars fail as Python values (an int of 5000 digits, the date 2020-13-45): said with their place.
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as e:
            raise yaml.constructor.ConstructorError(None, None, str(e), node.start_mark) from None


_SafeLoader.add_implicit_resolver(_INT, re.compile(r"[-+]?(0|[1-9][0-9]*)\Z"), list("-+0123456789"))
_SafeLoader.add_implicit_resolver(_FLOAT, re.compile(r"[-+]?(\.[0-9]+|(0|[1-9][0-9]*)(\.[0-9]*)?)([eE][-+]?[0-9]+)?\Z"
                                                     r"|[-+]?\.(inf|Inf|INF)\Z|\.(nan|NaN|NAN)\Z"),
                                  list("-+0123456789."))


def _line(event: yaml.Event) -> str:
    mark = event.start_mark
    return f"line {mark.line + 1}" if mark else "the end"


def _within_limits(text: str) -> None:
    """Refuse deep nesting, recursive aliases and more than MAX_VALUES values with aliases expanded."""
    values = 0
    open_anchors: list[tuple[str | None, int]] = []  # each open collection's anchor and the count at its start
    sizes: dict[str, int] = {}  # each finished anchor's value count, aliases in it expanded
    for event in yaml.parse(text, Loader=_SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            if any(anchor == event.anchor for anchor, _ in open_anchors):
                raise FileError(f"{_line(event)}: alias *{event.anchor} is inside its own anchor &{event.anchor} "
                                "(a recursive value); write the values out")
            values += sizes.get(event.anchor or "", 1)  # an undefined one is the composer's error
            if values > MAX_VALUES:
                raise FileError(f"{_line(event)}: aliases expand to more than {MAX_VALUES} values; a gwbot config "
                                "has about a hundred, write them out")
            continue
        if isinstance(event, yaml.ScalarEvent | yaml.CollectionStartEvent):
            values += 1
            if values > MAX_VALUES:
                raise FileError(f"{_line(event)}: more than {MAX_VALUES} values; a gwbot config has about a hundred")
        if isinstance(event, yaml.ScalarEvent) and event.anchor:
            sizes[event.anchor] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            open_anchors.append((event.anchor, values - 1))
            if len(open_anchors) > MAX_DEPTH:
                raise FileError(f"{_line(event)}: nested more than {MAX_DEPTH} levels deep; a gwbot config needs 3")
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, start = open_anchors.pop()
            if anchor:
                sizes[anchor] = values - start


def _unique_keys(node: yaml.Node | None, path: str = "") -> None:
    """YAML lets a key appear twice and keeps the last; in a config that hides a mistake."""
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            at = key_path(path, key.value)
            line = key.start_mark.line + 1
            if key.value in first_line:
                raise FileError(f"{at}: given twice, at lines {first_line[key.value]} and {line} (keep one)")
            first_line[key.value] = line
            _unique_keys(value, at)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _unique_keys(item, path)


def read_yaml(source: Path) -> Any:
    """The file's one YAML document as plain data; FileError (one line) for anything that stops it."""
    try:
        with source.open("rb") as file:
            raw = file.read(MAX_BYTES + 1)  # /dev/zero or a huge log must not be read whole
    except FileNotFoundError:
        raise FileError(f"file not found ({source.resolve()})") from None
    except OSError as e:
        raise FileError(f"cannot read: {e.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise FileError(f"larger than {MAX_BYTES // 1_000_000} MB; a gwbot config is a few kB (is it the right "
                        "file?)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FileError(f"not UTF-8 text (byte {e.start})") from None
    try:
        _within_limits(text)
        loader = _SafeLoader(text)
        try:
            node = loader.get_single_node()
            _unique_keys(node)
            return None if node is None else loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())  # some are multi-line
        raise FileError(f"invalid YAML{at}: {problem}") from None
