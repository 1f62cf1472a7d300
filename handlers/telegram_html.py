"""Telegram's HTML parse mode, as the Bot API reads it: what gwbot's formatted messages must pass.

gwbot measures a report by the text the markup leaves (Telegram's 4096 limit counts that) and
refuses to send markup Telegram would reject; the lab's Bot API stand-in parses with this same
code, so a test sees the 400 "can't parse entities" production would. Offsets and lengths are in
UTF-16 code units, as in the Bot API.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from html.parser import HTMLParser
from typing import Any


@dataclass(frozen=True)
class Entity:
    """A MessageEntity (``type`` is the Bot API's string, e.g. "bold", "bot_command")."""

    type: str
    offset: int
    length: int
    url: str | None = None
    language: str | None = None

    def json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


class FormatError(ValueError):
    """Markup Telegram would refuse; ``str(error)`` is the part after "Bad Request: "."""


MESSAGE_LIMIT = 4096  # what Telegram takes in one message: UTF-16 units of the text the markup leaves


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def fit_message(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """Plain text cut to what Telegram takes, marked with "…": a long answer arrives shortened
    instead of being refused (and then not arriving at all)."""
    if utf16_len(text) <= limit:
        return text
    cut = text.encode("utf-16-le")[:2 * (limit - 1)].decode("utf-16-le", errors="ignore")
    return cut + "…"


def trim(text: str, entities: tuple[Entity, ...]) -> tuple[str, tuple[Entity, ...]]:
    """Telegram drops leading and trailing whitespace and clips the entities with it."""
    lead = utf16_len(text) - utf16_len(text.lstrip())
    plain = text.strip()
    end = utf16_len(plain)
    clipped = []
    for e in entities:
        start, stop = max(e.offset - lead, 0), min(e.offset + e.length - lead, end)
        if stop > start:
            clipped.append(Entity(e.type, start, stop - start, e.url, e.language))
    return plain, tuple(clipped)


_HTML_TYPES = {"b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline", "ins": "underline",
               "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough", "tg-spoiler": "spoiler",
               "span": "spoiler", "a": "text_link", "code": "code", "pre": "pre", "blockquote": "blockquote",
               "tg-emoji": "custom_emoji"}


@dataclass(frozen=True)
class _Open:
    tag: str
    type: str | None  # None: a tag that adds no entity (<a> without href)
    start: int
    url: str | None = None


class _HtmlParser(HTMLParser):
    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.source = source
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", source)]
        self.out: list[str] = []
        self.length = 0  # UTF-16 units written so far
        self.stack: list[_Open] = []
        self.entities: list[Entity] = []

    def _byte_offset(self) -> int:
        line, col = self.getpos()
        return len(self.source[:self.line_starts[line - 1] + col].encode())

    def handle_data(self, data: str) -> None:
        self.out.append(data)
        self.length += utf16_len(data)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        kind = _HTML_TYPES.get(tag)
        if kind is None or (tag == "span" and values.get("class") != "tg-spoiler"):
            raise FormatError(f'can\'t parse entities: Unsupported start tag "{tag}" at byte offset '
                              f"{self._byte_offset()}")
        url = None
        if tag == "a":
            url = values.get("href") or None
            kind = "text_link" if url else None
        elif tag == "blockquote" and "expandable" in values:
            kind = "expandable_blockquote"
        elif tag == "code" and self.stack and self.stack[-1].tag == "pre" and values.get("class"):
            # <pre><code class="language-x"> is one pre entity with a language.
            pre = self.stack.pop()
            self.stack.append(_Open("pre", "pre", pre.start, (values["class"] or "").removeprefix("language-")))
            kind = None
        self.stack.append(_Open(tag, kind, self.length, url))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        raise FormatError(f'can\'t parse entities: Unsupported start tag "{tag}" at byte offset {self._byte_offset()}')

    def handle_endtag(self, tag: str) -> None:
        if not self.stack:
            raise FormatError(f"can't parse entities: Unexpected end tag at byte offset {self._byte_offset()}")
        top = self.stack.pop()
        if top.tag != tag:
            raise FormatError(f'can\'t parse entities: Unmatched end tag at byte offset {self._byte_offset()}, '
                              f'expected "</{top.tag}>", found "</{tag}>"')
        if top.type is not None and self.length > top.start:
            language = top.url if top.type == "pre" else None
            url = top.url if top.type == "text_link" else None
            self.entities.append(Entity(top.type, top.start, self.length - top.start, url, language))


def parse_html(text: str) -> tuple[str, tuple[Entity, ...]]:
    parser = _HtmlParser(text)
    parser.feed(text)
    parser.close()
    if parser.stack:
        tag = parser.stack[-1].tag
        raise FormatError(f'can\'t parse entities: Can\'t find end tag corresponding to start tag "{tag}"')
    return trim("".join(parser.out), tuple(sorted(parser.entities, key=lambda e: (e.offset, -e.length))))
