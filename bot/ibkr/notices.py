"""What the Gateway's informational error codes mean, in words the squad can read.

Judged by code, never by ib_async's log level (it logs 1100/1101 at ERROR).
"""

from __future__ import annotations

import re

from bot.ibkr.events import NoticeKind

_KINDS: dict[int, NoticeKind] = {
    1100: NoticeKind.LINK_LOST,
    2110: NoticeKind.SERVER_BROKEN,
    1101: NoticeKind.LINK_RESTORED_DATA_LOST,
    1102: NoticeKind.LINK_RESTORED,
    **dict.fromkeys((2103, 2105, 2157), NoticeKind.FARM_BROKEN),
    **dict.fromkeys((2104, 2106, 2158), NoticeKind.FARM_OK),
    2119: NoticeKind.FARM_CONNECTING,
    **dict.fromkeys((2107, 2108), NoticeKind.FARM_INACTIVE),
    321: NoticeKind.READ_ONLY,  # only when the text says Read-Only: see notice_kind
}

_FARM_TYPES: dict[int, str] = {
    2103: "Market data farm", 2104: "Market data farm", 2108: "Market data farm", 2119: "Market data farm",
    2105: "HMDS data farm", 2106: "HMDS data farm", 2107: "HMDS data farm",
    2157: "Sec-def data farm", 2158: "Sec-def data farm",
}
# Farm names come last: "...is OK:usfarm", "...available upon demand.ushmds", "...connecting:usfarm".
_FARM_AT_END = re.compile(r"[:.]\s*([A-Za-z][\w-]*)\s*$")


def notice_kind(code: int, text: str = "") -> NoticeKind | None:
    """The kind of a Gateway notice, or None when the code is a request error, not a notice."""
    if code == 321:
        return NoticeKind.READ_ONLY if "read-only" in text.lower() else None
    return _KINDS.get(code)


def farm_name(code: int, text: str) -> str:
    """'usfarm' from 'Market data farm connection is OK:usfarm' or '...upon demand.ushmds';
    the farm type when the text names none; "" when the notice is not about a farm."""
    if code not in _FARM_TYPES:
        return ""
    m = _FARM_AT_END.search(text)
    return m.group(1) if m else _FARM_TYPES[code]


# Each kind's sentence after its code; {type} and {farm} name a farm notice's farm.
_MEANINGS: dict[NoticeKind, str] = {
    NoticeKind.FARM_OK: "{type} '{farm}' connection OK (normal, not an error)",
    NoticeKind.FARM_BROKEN: "{type} '{farm}' connection broken: data from it is unavailable",
    NoticeKind.FARM_CONNECTING: "{type} '{farm}' connecting",
    NoticeKind.FARM_INACTIVE: "{type} '{farm}' inactive but available on demand (normal)",
    NoticeKind.LINK_LOST: "the Gateway lost its link to IB's servers (socket to us still up)",
    NoticeKind.SERVER_BROKEN: "the Gateway's link to IB's servers is broken; it will be restored automatically",
    NoticeKind.LINK_RESTORED_DATA_LOST: "back — subscriptions lost, resubscribe (link to IB's servers restored)",
    NoticeKind.LINK_RESTORED: "back — data kept (link to IB's servers restored)",
    NoticeKind.READ_ONLY: ("the Gateway's API is Read-Only (its 'Read-Only API' setting): order requests are "
                           "refused; gwbot places no orders, so this is fine"),
}


def explain(code: int, text: str) -> str:
    """One sentence for a notice; 2104/2106/2158 are normal, as the seed's report noted."""
    kind = notice_kind(code, text)
    if kind is None:
        return f"{code}: {text}"
    return f"{code}: " + _MEANINGS[kind].format(type=_FARM_TYPES.get(code, "data farm"), farm=farm_name(code, text))
