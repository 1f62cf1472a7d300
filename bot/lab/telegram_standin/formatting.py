"""The text Telegram makes of a message: parse_mode (gwbot sends HTML, or none) and the entities it
detects by itself (commands, mentions, links).

HTML is parsed by gwbot's own handlers/telegram_html.py, so a bot that sends broken markup gets the
same 400 "can't parse entities" here as in production. Offsets are in UTF-16 code units.
"""

from __future__ import annotations

import re

from handlers.telegram_html import Entity, FormatError, parse_html, trim, utf16_len


def parse(text: str, parse_mode: str | None) -> tuple[str, tuple[Entity, ...]]:
    """Plain text and entities, trimmed like Telegram trims; raises FormatError for bad markup."""
    if not parse_mode:
        return trim(text, ())
    if parse_mode.lower() != "html":
        raise FormatError("unsupported parse_mode")  # gwbot sends HTML; Telegram's other modes stay out
    return parse_html(text)


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
