"""The TWS API wire protocol as the simulated Gateway speaks it: framing, message ids, real notice texts,
one connection."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

SERVER_VERSION = 178
DEFAULT_ACCOUNTS = ("DUO779750",)
MAX_FRAME = 1 << 20

FIRST_ORDER_ID = 1  # the nextValidId sent at start-up
# Incoming message ids (client -> Gateway) looked at outside the reply table.
START_API, REQ_CURRENT_TIME = 71, 49
# Outgoing message ids (Gateway -> client).
ERR_MSG, NEXT_VALID_ID, MANAGED_ACCTS, CURRENT_TIME, ACCT_UPDATE_TIME, ACCT_DOWNLOAD_END = 4, 9, 15, 49, 8, 54
# Requests answered by an end marker alone: reqPositions -> positionEnd, reqOpenOrders -> openOrderEnd,
# reqCompletedOrders -> completedOrdersEnd (no version field).
ENDS = {61: (62, 1), 5: (53, 1), 99: (102,)}
# Requests answered by an end marker carrying their reqId (field 2): reqAccountUpdatesMulti,
# reqExecutions, reqAccountSummary (ib_async sends it after 1102).
REQ_ID_ENDS = {76: 74, 7: 55, 62: 64}
# Requests refused as a Gateway refuses them (reqId's field, code, text): reqMktData, placeOrder,
# reqContractDetails (the simulator knows no contracts).
REFUSED = {1: (2, 354, "Requested market data is not subscribed."),
           3: (1, 201, "Order rejected - reason:the simulated Gateway takes no orders"),
           9: (2, 200, "No security definition has been found for the request")}

# Real texts, as Gateways send them (IBKR's message-code docs; Gateway and IBC logs).
NOTICE_TEXTS = {
    326: "Unable to connect as the client id is already in use. Retry with a unique client id.",
    1100: "Connectivity between IB and Trader Workstation has been lost.",
    1101: "Connectivity between IB and Trader Workstation has been restored - data lost.",
    1102: "Connectivity between IB and Trader Workstation has been restored - data maintained.",
    2103: "Market data farm connection is broken:usfarm",
    2104: "Market data farm connection is OK:usfarm",
    2105: "HMDS data farm connection is broken:ushmds",
    2106: "HMDS data farm connection is OK:ushmds",
    2107: "HMDS data farm connection is inactive but should be available upon demand.ushmds",
    2108: "Market data farm connection is inactive but should be available upon demand.usfarm",
    2110: "Connectivity between Trader Workstation and server is broken. It will be restored automatically.",
    2119: "Market data farm is connecting:usfarm",
    2157: "Sec-def data farm connection is broken:secdefnj",
    2158: "Sec-def data farm connection is OK:secdefnj",
}
CONNECT_NOTICES = (2104, 2106, 2158)
FARMS_BROKEN, FARMS_OK = (2103, 2105, 2157), (2104, 2106, 2158)

# Read-Only API ("Read-Only API" ticked in the Gateway's API settings): order requests and the
# open/completed-order downloads get 321 and no end marker (ib_insync #1/#7/#224, IBC #341).
READ_ONLY_TEXT = "Error validating request:-'{tag}' : cause - The API interface is currently in Read-Only mode."
UNSET_INTEGER = 2**31 - 1  # the reqId a Gateway puts on errors not tied to a request
# Requests a Gateway never answers: cancels, unsubscribes, reqAutoOpenOrders, setServerLogLevel, reqMarketDataType.
UNANSWERED = frozenset({2, 6, 11, 13, 14, 15, 59, 23, 25, 51, 53, 56, 57, 63, 64, 75, 77, 89, 90, 93, 95, 98, 101, 103})
READ_ONLY_REFUSED = {3: "td", 4: "td", 21: "td", 58: "td", 5: "bY", 15: "bY", 16: "bY", 99: "bY"}


def frame(*fields: object) -> bytes:
    """One length-prefixed message of NUL-terminated ASCII fields."""
    payload = b"".join(str(f).encode() + b"\0" for f in fields)
    return struct.pack(">I", len(payload)) + payload


async def read_payload(reader: asyncio.StreamReader) -> bytes:
    """One frame's payload; readexactly, because TCP splits and merges frames as it likes."""
    (size,) = struct.unpack(">I", await reader.readexactly(4))
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is not TWS API traffic")
    return await reader.readexactly(size)


async def read_frame(reader: asyncio.StreamReader) -> list[str]:
    text = (await read_payload(reader)).decode(errors="replace")
    return text.removesuffix("\0").split("\0")


def parse_version_range(text: str) -> tuple[int, int]:
    """'v157..178 +PACEAPI' -> (157, 178); a bare 'v100' means (100, 100)."""
    versions = text.split(" ", 1)[0].removeprefix("v")
    low, _, high = versions.partition("..")
    return int(low), int(high or low)


def notice_text(code: int) -> str:
    return NOTICE_TEXTS.get(code, f"notice {code}")


class Client:
    """One API connection: its socket and its state (`gateway.clients` lists the open ones)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.peer = f"{peer[0]}:{peer[1]}"
        self.client_id: int | None = None
        self.version = 0
        self.ready = False

    def close(self, reset: bool = False) -> None:
        if reset:
            sock = self.writer.get_extra_info("socket")
            if sock is not None:
                # SO_LINGER 0: close() sends RST instead of FIN, like a crashed process.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.close()
