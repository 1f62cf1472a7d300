"""Telegram's text formatting: parse_mode HTML / MarkdownV2 / Markdown into plain text plus entities.

HTML is gwbot's own (handlers/telegram_html.py: the product checks what it sends); the rest is here.

The stand-in parses like Telegram does so a bot that sends broken markup (an unescaped ``.`` in
MarkdownV2, an unclosed ``<b>``) gets the same 400 "can't parse entities" here as in production.
Offsets and lengths are in UTF-16 code units, as in the Bot API.
"""

from __future__ import annotations

import re
from enum import StrEnum

from handlers.telegram_html import Entity, FormatError, parse_html, trim, utf16_len


class ParseMode(StrEnum):
    HTML = "html"
    MARKDOWN_V2 = "markdownv2"
    MARKDOWN = "markdown"


def parse(text: str, parse_mode: str | None) -> tuple[str, tuple[Entity, ...]]:
    """Plain text and entities, trimmed like Telegram trims; raises FormatError for bad markup."""
    if not parse_mode:
        return trim(text, ())
    try:
        mode = ParseMode(parse_mode.lower())
    except ValueError:
        raise FormatError("unsupported parse_mode") from None
    if mode is ParseMode.HTML:
        return parse_html(text)
    plain, entities = _Markdown(text, v2=mode is ParseMode.MARKDOWN_V2).parse()
    return trim(plain, entities)


def with_detected(text: str, entities: tuple[Entity, ...]) -> tuple[Entity, ...]:
    """Add the entities Telegram finds by itself (commands, mentions, links) outside code blocks."""
    code = [(e.offset, e.offset + e.length) for e in entities if e.type in ("code", "pre", "text_link")]
    found = list(entities)
    for kind, pattern in _DETECT:
        for match in pattern.finditer(text):
            start = utf16_len(text[:match.start()])
            length = utf16_len(match.group())
            if not any(a < start + length and start < b for a, b in code):
                found.append(Entity(kind, start, length))
    return tuple(sorted(found, key=lambda e: (e.offset, -e.length)))


_DETECT = (
    ("bot_command", re.compile(r"(?<![\w/])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z][A-Za-z0-9_]{2,31})?(?![\w/])")),
    ("mention", re.compile(r"(?<![\w@])@[A-Za-z][A-Za-z0-9_]{4,31}(?!\w)")),
    ("url", re.compile(r"https?://[^\s<>\"]+[^\s<>\".,;:!?)\]]")),
)


# -------------------------------------------------------------- Markdown
_V2_RESERVED = set("_*[]()~`>#+-=|{}.!")
_LEGACY_LINK = re.compile(r"\[([^\]]*)\]\(([^)]*)\)")
_NAMES = {"bold": "Bold", "italic": "Italic", "underline": "Underline", "strikethrough": "Strikethrough",
          "spoiler": "Spoiler", "code": "Code", "pre": "Pre", "text_link": "TextUrl"}


class _Markdown:
    """Telegram's MarkdownV2 (nested entities, reserved characters) or legacy Markdown."""

    def __init__(self, source: str, *, v2: bool) -> None:
        self.s = source
        self.v2 = v2
        self.i = 0
        self.out: list[str] = []
        self.length = 0
        self.stack: list[tuple[str, int, int]] = []  # (type, start in UTF-16, byte offset of the marker)
        self.entities: list[Entity] = []

    def parse(self) -> tuple[str, tuple[Entity, ...]]:
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c == "\\" and self._escapable(self.i + 1):
                self._emit(s[self.i + 1])
                self.i += 2
            elif c == "`":
                self._code()
            elif c == "[" and not self.v2:
                self._legacy_link()
            elif c == "[":
                self.stack.append(("text_link", self.length, self._bytes()))
                self.i += 1
            elif c == "]" and self.stack and self.stack[-1][0] == "text_link":
                self._link_end()
            elif self.v2 and s.startswith("||", self.i):
                self._toggle("spoiler", 2)
            elif self.v2 and s.startswith("__", self.i):
                self._toggle("underline", 2)
            elif c in "*_" or (self.v2 and c == "~"):
                self._toggle({"*": "bold", "_": "italic", "~": "strikethrough"}[c], 1)
            elif self.v2 and c in _V2_RESERVED:
                raise FormatError(f"can't parse entities: Character '{c}' is reserved and must be escaped with the "
                                  "preceding '\\'")
            else:
                self._emit(c)
                self.i += 1
        if self.stack:
            kind, _, at = self.stack[-1]
            raise FormatError(self._unclosed(kind, at))
        return "".join(self.out), tuple(sorted(self.entities, key=lambda e: (e.offset, -e.length)))

    def _escapable(self, j: int) -> bool:
        if j >= len(self.s):
            return False
        return 0 < ord(self.s[j]) < 127 if self.v2 else self.s[j] in "_*`["

    def _bytes(self) -> int:
        return len(self.s[:self.i].encode())

    def _emit(self, text: str) -> None:
        self.out.append(text)
        self.length += utf16_len(text)

    def _unclosed(self, kind: str, at: int) -> str:
        if self.v2:
            return f"can't parse entities: Can't find end of {_NAMES[kind]} entity at byte offset {at}"
        return f"can't parse entities: Can't find end of the entity starting at byte offset {at}"

    def _toggle(self, kind: str, width: int) -> None:
        if self.stack and self.stack[-1][0] == kind:
            _, start, _ = self.stack.pop()
            if self.length > start:
                self.entities.append(Entity(kind, start, self.length - start))
        elif any(k == kind for k, _, _ in self.stack) or (not self.v2 and self.stack):
            # Entities must nest properly (legacy Markdown cannot nest at all).
            k, _, at = self.stack[-1]
            raise FormatError(self._unclosed(k, at))
        else:
            self.stack.append((kind, self.length, self._bytes()))
        self.i += width

    def _code(self) -> None:
        s, at = self.s, self._bytes()
        pre = s.startswith("```", self.i)
        fence = "```" if pre else "`"
        j = self.i + len(fence)
        body: list[str] = []
        while j < len(s) and not s.startswith(fence, j):
            if self.v2 and s[j] == "\\" and j + 1 < len(s) and s[j + 1] in "`\\":
                j += 1
            body.append(s[j])
            j += 1
        if j >= len(s):
            raise FormatError(self._unclosed("pre" if pre else "code", at))
        text, language = "".join(body), None
        if pre and "\n" in text:
            first, rest = text.split("\n", 1)
            if first and not first[0].isspace():
                text, language = rest, first
        if text:
            self.entities.append(Entity("pre" if pre else "code", self.length, utf16_len(text), None, language))
            self._emit(text)
        self.i = j + len(fence)

    def _legacy_link(self) -> None:
        match = _LEGACY_LINK.match(self.s, self.i)
        if match is None:  # a lone "[" is just text in legacy Markdown
            self._emit("[")
            self.i += 1
            return
        if match.group(1) and match.group(2):
            self.entities.append(Entity("text_link", self.length, utf16_len(match.group(1)), match.group(2)))
        self._emit(match.group(1))
        self.i = match.end()

    def _link_end(self) -> None:
        kind, start, at = self.stack.pop()
        s, j = self.s, self.i + 1
        if j >= len(s) or s[j] != "(":
            raise FormatError(self._unclosed(kind, at))
        url: list[str] = []
        j += 1
        while j < len(s) and s[j] != ")":
            if self.v2 and s[j] == "\\" and j + 1 < len(s):
                j += 1
            url.append(s[j])
            j += 1
        if j >= len(s):
            raise FormatError(self._unclosed(kind, at))
        if self.length > start and url:
            self.entities.append(Entity("text_link", start, self.length - start, "".join(url)))
        self.i = j + 1
