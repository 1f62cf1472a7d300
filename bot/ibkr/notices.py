"""What the Gateway's informational error codes mean, in words the squad can read."""

from __future__ import annotations

from bot.ibkr.events import NoticeKind

_KINDS: dict[int, NoticeKind] = {
    1100: NoticeKind.LINK_LOST,
    1101: NoticeKind.LINK_RESTORED_DATA_LOST,
    1102: NoticeKind.LINK_RESTORED,
    2103: NoticeKind.FARM_BROKEN,
    2105: NoticeKind.FARM_BROKEN,
    2157: NoticeKind.FARM_BROKEN,
    2104: NoticeKind.FARM_OK,
    2106: NoticeKind.FARM_OK,
    2158: NoticeKind.FARM_OK,
    2107: NoticeKind.FARM_INACTIVE,
    2108: NoticeKind.FARM_INACTIVE,
}

_FARM_TYPES: dict[int, str] = {
    2103: "Market data farm", 2104: "Market data farm", 2108: "Market data farm",
    2105: "HMDS data farm", 2106: "HMDS data farm", 2107: "HMDS data farm",
    2157: "Sec-def data farm", 2158: "Sec-def data farm",
}


def notice_kind(code: int) -> NoticeKind | None:
    """The kind of a Gateway notice, or None when the code is a request error, not a notice."""
    return _KINDS.get(code)


def farm_name(code: int, text: str) -> str:
    """'usfarm' from 'Market data farm connection is OK:usfarm', with the farm type as fallback."""
    _, sep, name = text.rpartition(":")
    return name.strip() if sep and name.strip() else _FARM_TYPES.get(code, "")


def explain(code: int, text: str) -> str:
    """One sentence for a notice; 2104/2106/2158 are normal, as the seed's report noted."""
    kind = _KINDS.get(code)
    farm = farm_name(code, text)
    farm_type = _FARM_TYPES.get(code, "data farm")
    match kind:
        case NoticeKind.FARM_OK:
            return f"{code}: {farm_type} '{farm}' connection OK (normal, not an error)"
        case NoticeKind.FARM_BROKEN:
            return f"{code}: {farm_type} '{farm}' connection broken: data from it is unavailable"
        case NoticeKind.FARM_INACTIVE:
            return f"{code}: {farm_type} '{farm}' inactive but available on demand (normal)"
        case NoticeKind.LINK_LOST:
            return f"{code}: the Gateway lost its link to IB's servers (socket to us still up)"
        case NoticeKind.LINK_RESTORED_DATA_LOST:
            return f"{code}: link to IB's servers restored, market data subscriptions were lost"
        case NoticeKind.LINK_RESTORED:
            return f"{code}: link to IB's servers restored, data maintained"
        case _:
            return f"{code}: {text}"
