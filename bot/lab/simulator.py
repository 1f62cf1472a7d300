"""A simulated IB Gateway: a real TCP server speaking the TWS API wire protocol.

The unmodified ib_async client connects to it with default arguments. It can be stopped,
restarted, frozen and made to misbehave the way real Gateways do, from tests (async methods)
or from another terminal (a line-based control port modelled on IBC's command server).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import re
import socket
import struct
import time
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

log = logging.getLogger(__name__)

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


class Reject(enum.Enum):
    """How new connections are refused before the handshake (trusted IPs, "localhost only")."""
    OFF = "off"
    FIN = "fin"
    RST = "rst"


@dataclass(frozen=True)
class NightlyReset:
    """A running ``reset``: the IB link is down until its timer ends."""
    lost: bool
    deaf: bool


class SimulatedGateway:
    """An IB Gateway stand-in on ``host:port`` (port 0: a free one, kept across restarts)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, accounts: Sequence[str] = DEFAULT_ACCOUNTS) -> None:
        self.host = host
        self.port = port
        self.accounts = tuple(accounts)
        self.connect_notices: tuple[int, ...] = CONNECT_NOTICES
        self.latency = 0.0
        self.ready = True
        self.reject = Reject.OFF
        self.readonly = False
        self.hang: frozenset[int] = frozenset()
        self.slow: dict[int, float] = {}
        self.hold_id = 0.0
        self.reset: NightlyReset | None = None
        self._held: dict[int, float] = {}  # client id -> monotonic time it is free again
        self._server: asyncio.Server | None = None
        self._clients: set[Client] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._jobs: dict[str, asyncio.Task[None]] = {}  # background timers: restart, ready, reset
        self._until: dict[str, float] = {}  # when each timer ends (monotonic), for status
        self._late: set[asyncio.Task[None]] = set()  # answers held back by `slow`
        self._thawed = asyncio.Event()
        self._thawed.set()
        self._changed = asyncio.Condition()

    # ------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def frozen(self) -> bool:
        return not self._thawed.is_set()

    @property
    def clients(self) -> list[Client]:
        return list(self._clients)

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._serve_client, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("simulated Gateway listening on %s:%s (accounts %s)", self.host, self.port, ",".join(self.accounts))

    async def stop(self, reset: bool = False) -> None:
        """Like quitting the Gateway: the port closes and every API client is disconnected
        (FIN, or RST with ``reset`` as the daily auto-restart does)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for client in list(self._clients):
            client.close(reset=reset)
        await server.wait_closed()
        await self._settle()
        self._held.clear()  # a new Gateway process remembers no client ids
        self._cancel_job("reset")
        self.reset = None
        log.info("simulated Gateway on %s:%s stopped%s", self.host, self.port, " (clients reset)" if reset else "")

    async def restart(self, down_for: float = 0.0, *, ready_after: float = 0.0, reset: bool = False) -> None:
        """Port closed ``down_for`` s; then it accepts, but the API is ready only ``ready_after`` s later."""
        await self.stop(reset=reset)
        await asyncio.sleep(down_for)
        if ready_after > 0:
            self.ready_after(ready_after)
        await self.start()

    async def begin_restart(self, down_for: float = 0.0, *, ready_after: float = 0.0, reset: bool = False) -> None:
        """``restart`` that returns once the port is closed; the rest runs in the background."""
        self._cancel_job("restart")
        await self.stop(reset=reset)
        self._start_job("restart", down_for, self.restart(down_for, ready_after=ready_after))

    def cancel_restart(self) -> None:
        """Forget a restart still counting down (an explicit stop or start overrides it)."""
        self._cancel_job("restart")

    def ready_after(self, seconds: float) -> None:
        """The API becomes ready ``seconds`` from now (a Gateway still logging in until then)."""
        self.set_ready(False)

        async def later() -> None:
            await asyncio.sleep(seconds)
            self.set_ready(True)
        self._start_job("ready", seconds, later())

    async def __aenter__(self) -> SimulatedGateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop serving and cancel every timer this Gateway started."""
        jobs = [*self._jobs.values(), *self._late]
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        self._jobs.clear()
        self.unfreeze()
        await self.stop()
        await self._settle()

    def _start_job(self, name: str, seconds: float, coro: Coroutine[object, object, None]) -> None:
        self._cancel_job(name)
        task = asyncio.create_task(coro, name=f"simulated-gateway-{name}")
        self._jobs[name], self._until[name] = task, time.monotonic() + seconds
        task.add_done_callback(lambda t: self._cancel_job(name) if self._jobs.get(name) is t else None)

    def _cancel_job(self, name: str) -> None:
        task = self._jobs.pop(name, None)
        self._until.pop(name, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _left(self, name: str) -> str:
        return f"{max(0.0, self._until[name] - time.monotonic()):.0f} s left"

    async def _settle(self) -> None:
        """Let client tasks observe their closed sockets and finish."""
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)

    # ------------------------------------------------------------- controls
    def freeze(self) -> None:
        """Sockets stay open, nothing is answered: a hung Gateway."""
        self._thawed.clear()
        log.info("simulated Gateway frozen")

    def unfreeze(self) -> None:
        self._thawed.set()
        log.info("simulated Gateway unfrozen")

    def set_ready(self, ready: bool) -> None:
        """False: answer the handshake but never send accounts / next id (not logged in, dialog open).

        Clients whose startApi arrived while not ready stay stuck when the API becomes ready: a
        real Gateway does not replay a handshake it dropped while logging in; clients must retry.
        """
        if asyncio.current_task() is not self._jobs.get("ready"):
            self._cancel_job("ready")
        self.ready = ready
        log.info("simulated Gateway %s", "ready" if ready else "NOT ready (as if not logged in)")

    def set_latency(self, seconds: float) -> None:
        self.latency = max(0.0, seconds)
        log.info("simulated Gateway latency %.3f s", self.latency)

    def set_reject(self, reject: Reject) -> None:
        self.reject = reject
        log.info("simulated Gateway rejects new connections: %s", reject.value)

    def set_readonly(self, readonly: bool) -> None:
        self.readonly = readonly
        log.info("simulated Gateway Read-Only API %s", "on" if readonly else "off")

    def set_hang(self, msg_ids: Iterable[int]) -> None:
        """Requests with these message ids are never answered (a start-up sync that hangs)."""
        self.hang = frozenset(msg_ids)
        log.info("simulated Gateway leaves requests %s unanswered", sorted(self.hang) or "none")

    def set_slow(self, msg_id: int, seconds: float) -> None:
        """Answers to ``msg_id`` come ``seconds`` late (0: on time again)."""
        if seconds > 0:
            self.slow[msg_id] = seconds
        else:
            self.slow.pop(msg_id, None)
        log.info("simulated Gateway answers request %s %.3g s late", msg_id, seconds)

    def set_hold_id(self, seconds: float) -> None:
        """A client id stays taken ``seconds`` after its client left (0: freed at once)."""
        self.hold_id = seconds
        if not seconds:
            self._held.clear()
        log.info("simulated Gateway holds client ids %.3g s after their client left", seconds)

    def set_connect_notices(self, codes: Sequence[int]) -> None:
        self.connect_notices = tuple(codes)
        log.info("simulated Gateway sends %s at connect", list(self.connect_notices) or "no notices")

    async def begin_reset(self, seconds: float, *, lost: bool, deaf: bool = False) -> int:
        """The nightly server reset: 1100 and farms broken now, 1101 (lost) / 1102 (kept) and
        farms OK after ``seconds``; with ``deaf`` heartbeats go unanswered meanwhile."""
        self._cancel_job("reset")
        self.reset = NightlyReset(lost, deaf)
        n = 0
        for code in (1100, *FARMS_BROKEN):
            n = await self.send_notice(code)

        async def restore() -> None:
            await asyncio.sleep(seconds)
            self.reset = None
            for code in (1101 if lost else 1102, *FARMS_OK):
                await self.send_notice(code)
        self._start_job("reset", seconds, restore())
        return n

    async def drop_clients(self, reset: bool = False) -> int:
        """Close every API connection (FIN, or RST with ``reset``); the port stays open."""
        clients = list(self._clients)
        for client in clients:
            client.close(reset=reset)
        await self._settle()
        log.info("simulated Gateway dropped %d client(s) with a %s", len(clients), "reset" if reset else "clean close")
        return len(clients)

    async def send_notice(self, code: int, text: str | None = None) -> int:
        """An error-channel notice (1100, 1102, 2103 …) to every ready client."""
        ready = [c for c in self._clients if c.ready]
        for client in ready:
            await self._send(client, self._error(client, -1, code, text or notice_text(code)))
        log.info("simulated Gateway sent notice %s to %d client(s)", code, len(ready))
        return len(ready)

    async def send_garbage(self, data: bytes = b"\xde\xad\xbe\xef garbage \xff\xff") -> int:
        for client in self._clients:
            client.writer.write(data)
        log.info("simulated Gateway sent %d garbage bytes to %d client(s)", len(data), len(self._clients))
        return len(self._clients)

    async def wait_for_clients(self, count: int, timeout: float = 5.0, *, ready: bool = True) -> None:
        """Wait until exactly ``count`` clients are connected (and ready, by default)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: sum(1 for c in self._clients if c.ready or not ready) == count)

    def faults(self) -> list[str]:
        """Every active departure from a healthy Gateway, for `status`."""
        out = []
        if "restart" in self._jobs:
            out.append(f"restarting (port closed, {self._left('restart')})")
        if not self.ready:
            out.append("not ready" + (f" ({self._left('ready')})" if "ready" in self._jobs else ""))
        if self.frozen:
            out.append("frozen")
        if self.latency:
            out.append(f"latency {self.latency:g} s")
        if self.reject is not Reject.OFF:
            out.append(f"reject {self.reject.value}")
        if self.readonly:
            out.append("readonly")
        if self.hang:
            out.append("hang " + ",".join(map(str, sorted(self.hang))))
        out += [f"slow {m} {s:g} s" for m, s in sorted(self.slow.items())]
        if self.hold_id:
            out.append(f"holdid {self.hold_id:g} s")
        if self.reset is not None:
            out.append(f"reset {'lost' if self.reset.lost else 'kept'} ({self._left('reset')}"
                       + (", deaf)" if self.reset.deaf else ")"))
        if self.connect_notices != CONNECT_NOTICES:
            out.append("connectnotices " + (",".join(map(str, self.connect_notices)) or "none"))
        return out

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -------------------------------------------------------------- serving
    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = Client(reader, writer)
        if self._server is None:  # accepted in the instant of a stop
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self.reject is not Reject.OFF:
                await self._refuse(client, self.reject)
                return
            self._clients.add(client)
            log.debug("connection from %s", client.peer)
            await self._notify()
            if await self._handshake(client):
                while True:
                    fields = await read_frame(reader)
                    await self._thawed.wait()
                    await self._handle(client, fields)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except ValueError as e:
            log.warning("client %s (id %s) sent a malformed message: %s; closing it", client.peer, client.client_id, e)
        except Exception:
            log.exception("client %s (id %s): unexpected error; closing it", client.peer, client.client_id)
        finally:
            self._clients.discard(client)
            client.close()
            self._tasks.discard(task)
            if client.ready and self.hold_id and client.client_id is not None:
                self._held[client.client_id] = time.monotonic() + self.hold_id
            if client.version:
                log.info("client %s (id %s) disconnected", client.peer, client.client_id)
            else:  # closed before the handshake: a port probe (gwbot knocks between reconnect attempts)
                log.debug("connection from %s closed before the API handshake", client.peer)
            with contextlib.suppress(RuntimeError):
                await self._notify()

    async def _refuse(self, client: Client, how: Reject) -> None:
        """Close before the handshake, without a word, as a Gateway does to an untrusted address."""
        log.info("connection from %s rejected before the handshake (%s)", client.peer, how.value)
        if how is Reject.RST:
            client.close(reset=True)
            return
        # FIN first; then drain what the client already sent, since closing a socket with
        # unread input would send RST instead.
        with contextlib.suppress(OSError):
            client.writer.write_eof()
        with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError):
            async with asyncio.timeout(2.0):
                while await client.reader.read(4096):
                    pass
        client.close()

    async def _handshake(self, client: Client) -> bool:
        prefix = await client.reader.readexactly(4)
        if prefix != b"API\0":
            log.warning("client %s did not start with API\\0 (got %r); closing it", client.peer, prefix)
            return False
        low, high = parse_version_range((await read_payload(client.reader)).decode(errors="replace"))
        await self._thawed.wait()
        version = min(high, SERVER_VERSION)
        if version < low:
            log.warning("client %s needs API version >= %d, we speak <= %d; closing it", client.peer, low, version)
            return False
        client.version = version
        log.info("API client %s connected, version %d", client.peer, version)
        await self._send(client, frame(version, datetime.now(UTC).strftime("%Y%m%d %H:%M:%S UTC")))
        return True

    async def _send(self, client: Client, *messages: bytes, delay: float = 0.0) -> None:
        if self.latency or delay:
            await asyncio.sleep(self.latency + delay)
        if client.writer.is_closing():
            return
        for message in messages:
            client.writer.write(message)
        with contextlib.suppress(ConnectionError):
            await client.writer.drain()

    def _error(self, client: Client, req_id: int | str, code: int, text: str) -> bytes:
        # From server version 166 ib_async drops an error message without advancedOrderRejectJson.
        return frame(ERR_MSG, 2, req_id, code, text, *([""] if client.version >= 166 else []))

    async def _handle(self, client: Client, fields: list[str]) -> None:
        if not fields or not fields[0].lstrip("-").isdigit():
            raise ValueError(f"message without a numeric id: {fields[:3]}")
        msg_id = int(fields[0])
        if msg_id == START_API:
            await self._start_api(client, fields)
            return
        if msg_id in self.hang:
            log.info("client %s: request %s left unanswered (hang)", client.client_id, msg_id)
            return
        if msg_id == REQ_CURRENT_TIME and self.reset is not None and self.reset.deaf:
            log.info("client %s: heartbeat unanswered (reset, deaf)", client.client_id)
            return
        reply = self._reply(client, msg_id, fields)
        delay = self.slow.get(msg_id, 0.0)
        if delay:
            task = asyncio.create_task(self._send(client, *reply, delay=delay))
            self._late.add(task)
            task.add_done_callback(self._late.discard)
        else:
            await self._send(client, *reply)

    def _reply(self, client: Client, msg_id: int, f: list[str]) -> list[bytes]:
        """What a real Gateway answers to one request; an error for those it cannot serve."""
        acct = self.accounts[0] if self.accounts else ""

        def field(i: int) -> str:
            return f[i] if len(f) > i else ""
        if self.readonly and msg_id in READ_ONLY_REFUSED:
            req_id = {3: field(1), 4: field(2)}.get(msg_id) or UNSET_INTEGER
            return [self._error(client, req_id, 321, READ_ONLY_TEXT.format(tag=READ_ONLY_REFUSED[msg_id]))]
        if msg_id in ENDS:
            return [frame(*ENDS[msg_id])]
        if msg_id in REQ_ID_ENDS and len(f) > 2:
            return [frame(REQ_ID_ENDS[msg_id], 1, f[2])]
        if msg_id in REFUSED:
            at, code, text = REFUSED[msg_id]
            return [self._error(client, field(at) or -1, code, text)]
        match msg_id:
            case 49:  # reqCurrentTime
                return [frame(CURRENT_TIME, 1, int(time.time()))]
            case 6 if field(2) == "1":  # reqAccountUpdates(subscribe)
                return [frame(ACCT_UPDATE_TIME, 1, datetime.now(UTC).strftime("%H:%M")),
                        frame(ACCT_DOWNLOAD_END, 1, field(3) or acct)]
            case _ if msg_id in UNANSWERED:
                return []
            case 17:  # reqManagedAccts
                return [frame(MANAGED_ACCTS, 1, ",".join(self.accounts))]
            case 8:  # reqIds
                return [frame(NEXT_VALID_ID, 1, FIRST_ORDER_ID)]
            case 20:  # reqHistoricalData: fields 3 symbol, 9 exchange, 19 whatToShow
                text = (f"Historical Market Data Service error message:HMDS query returned no data: "
                        f"{field(3)}@{field(9)} {field(19).title()}")
                return [self._error(client, field(1) or -1, 162, text)]
        log.warning("client %s sent request %s %s, which the simulated Gateway does not serve; answering an error",
                    client.client_id, msg_id, f[1:4])
        return [self._error(client, -1, 321, f"Error validating request:-'sim' : cause - "
                                             f"the simulated Gateway does not serve message id {msg_id}.")]

    async def _start_api(self, client: Client, fields: list[str]) -> None:
        client_id = int(fields[2]) if len(fields) > 2 and fields[2].lstrip("-").isdigit() else 0
        client.client_id = client_id
        held = self._held.get(client_id, 0.0) > time.monotonic()
        if held or any(c is not client and c.client_id == client_id and c.ready for c in self._clients):
            log.warning("client %s asked for client id %s, %s: 326", client.peer, client_id,
                        "still held after its client left" if held else "already in use")
            await self._send(client, self._error(client, -1, 326, NOTICE_TEXTS[326]))
            client.close()
            return
        if not self.ready:
            log.info("client %s (id %s) waits: Gateway not ready (no accounts / next id sent)", client.peer, client_id)
            return
        client.ready = True
        await self._send(
            client,
            frame(MANAGED_ACCTS, 1, ",".join(self.accounts)),
            frame(NEXT_VALID_ID, 1, FIRST_ORDER_ID),
            # During a nightly reset a newcomer hears that the link and the farms are down.
            *(self._error(client, -1, code, notice_text(code))
              for code in (self.connect_notices if self.reset is None else (1100, *FARMS_BROKEN))),
        )
        log.info("client %s ready as client id %s", client.peer, client_id)
        await self._notify()


def notice_text(code: int) -> str:
    return NOTICE_TEXTS.get(code, f"notice {code}")


# ------------------------------------------------------------------ control
# Every command: its usage line (quoted by its errors; its [--options] are the ones it takes) and
# how many other words it takes, fewest and most.
COMMANDS: dict[str, tuple[str, int, float]] = {
    "STATUS": ("status", 0, 0),
    "STOP": ("stop [--rst]", 0, 0),
    "START": ("start", 0, 0),
    "RESTART": ("restart [DOWN] [--ready-after S] [--rst]", 0, 1),
    "READY": ("ready on|off", 1, 1),
    "REJECT": ("reject fin|rst|off", 1, 1),
    "READONLY": ("readonly on|off", 1, 1),
    "HANG": ("hang MSGID[,MSGID...]|off  (e.g. hang 7,99)", 1, 1),
    "SLOW": ("slow MSGID SECONDS  (0 seconds: on time again)", 2, 2),
    "RESET": ("reset SECONDS lost|kept [--deaf]", 2, 2),
    "HOLDID": ("holdid SECONDS  (0: client ids are free at once)", 1, 1),
    "NOTICE": ("notice CODE [TEXT]", 1, math.inf),
    "CONNECTNOTICES": ("connectnotices CODE[,CODE...]|default|none", 1, 1),
    "FREEZE": ("freeze", 0, 0),
    "UNFREEZE": ("unfreeze", 0, 0),
    "DROP": ("drop [reset]", 0, 1),
    "LATENCY": ("latency SECONDS", 1, 1),
    "GARBAGE": ("garbage", 0, 0),
}
# "STATUS | STOP [--rst] | ... | READY on|off | ...": each usage without its hint, the command in capitals.
CONTROL_HELP = " | ".join(cmd + usage.split("  (")[0][len(cmd):] for cmd, (usage, _, _) in COMMANDS.items())
MAX_SECONDS = 86_400.0
NO_CONTROL_PORT = "ERROR no simulated Gateway control port"


class BadCommand(ValueError):
    """A control command with bad arguments: the message says what is expected."""


def _seconds(word: str, what: str, *, low: float = 0.0, high: float = MAX_SECONDS) -> float:
    try:
        value = float(word)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not low <= value <= high:
        raise BadCommand(f"{what} must be a number of seconds from {low:g} to {high:g}, not {word!r}")
    return value


def _integer(word: str, what: str, low: int, high: int) -> int:
    if not word.isdigit() or not low <= int(word) <= high:
        raise BadCommand(f"{what} must be a whole number from {low} to {high}, not {word!r}")
    return int(word)


def _choice(word: str, usage: str, choices: Sequence[str]) -> str:
    if word.lower() not in choices:
        raise BadCommand(f"usage: {usage}")
    return word.lower()


def _arguments(cmd: str, args: list[str]) -> tuple[list[str], dict[str, str]]:
    """``args`` checked against the command's usage line: its words, and its --options with their values."""
    usage, fewest, most = COMMANDS[cmd]
    known = dict(re.findall(r"\[(--[a-z-]+) ?([A-Z]*)\]", usage))  # option -> the name of its value, if any
    words: list[str] = []
    opts: dict[str, str] = {}
    it = iter(args)
    for word in it:
        if not (known and word.startswith("--")):  # a command without options takes "--" as a word (notice TEXT)
            words.append(word)
        elif word.lower() not in known:
            raise BadCommand(f"unknown option {word}; usage: {usage}")
        else:
            opts[word.lower()] = next(it, "") if known[word.lower()] else "set"
            if not opts[word.lower()]:
                raise BadCommand(f"{word} needs a value; usage: {usage}")
    if not fewest <= len(words) <= most:
        raise BadCommand(f"usage: {usage}" + (" (takes no arguments)" if not most else ""))
    return words, opts


def _msg_ids(word: str) -> list[int]:
    ids = [_integer(w, "a message id", 1, 999) for w in word.split(",")]
    if START_API in ids:
        raise BadCommand("71 is startApi: use `ready off` for a Gateway that never gets ready")
    return ids


async def _run(gateway: SimulatedGateway, cmd: str, args: list[str]) -> str:
    """One command, arguments checked before anything changes; returns the OK line."""
    if cmd not in COMMANDS:
        return f"ERROR unknown command {cmd}; commands: {CONTROL_HELP}"
    usage = COMMANDS[cmd][0]
    words, opts = _arguments(cmd, args)
    word = words[0] if words else ""
    reset = "--rst" in opts
    match cmd:
        case "STATUS":
            ids = ",".join(str(c.client_id) for c in gateway.clients if c.ready) or "none"
            return (f"OK {'running' if gateway.running else 'stopped'} port={gateway.port} clients={ids} "
                    f"faults={'; '.join(gateway.faults()) or 'none'}")
        case "STOP":
            gateway.cancel_restart()
            await gateway.stop(reset=reset)
            return "OK stop" + (" (clients reset)" if reset else "")
        case "START":
            gateway.cancel_restart()
            await gateway.start()
            return "OK start"
        case "RESTART":
            down = _seconds(word, "DOWN") if words else 0.0
            ready_after = _seconds(opts["--ready-after"], "--ready-after") if "--ready-after" in opts else 0.0
            await gateway.begin_restart(down, ready_after=ready_after, reset=reset)
            return (f"OK restart: port closed for {down:g} s" + (", clients reset" if reset else "")
                    + (f", API ready {ready_after:g} s after it reopens" if ready_after else ""))
        case "READY":
            gateway.set_ready(_choice(word, usage, ("on", "off")) == "on")
        case "REJECT":
            gateway.set_reject(Reject(_choice(word, usage, ("fin", "rst", "off"))))
        case "READONLY":
            gateway.set_readonly(_choice(word, usage, ("on", "off")) == "on")
        case "HANG":
            gateway.set_hang([] if word.lower() == "off" else _msg_ids(word))
        case "SLOW":
            (msg_id,) = _msg_ids(word)
            gateway.set_slow(msg_id, _seconds(words[1], "SECONDS"))
        case "RESET":
            lost = _choice(words[1], usage, ("lost", "kept")) == "lost"
            seconds = _seconds(word, "SECONDS")
            n = await gateway.begin_reset(seconds, lost=lost, deaf="--deaf" in opts)
            return f"OK reset: IB link down for {seconds:g} s, {n} client(s) told"
        case "HOLDID":
            gateway.set_hold_id(_seconds(word, "SECONDS"))
        case "NOTICE":
            code = _integer(word, "CODE", 1, 99_999)
            n = await gateway.send_notice(code, " ".join(words[1:]) or None)
            return f"OK notice {code} sent to {n} client(s)"
        case "CONNECTNOTICES":
            choice = word.lower()
            gateway.set_connect_notices(CONNECT_NOTICES if choice == "default" else () if choice == "none"
                                        else [_integer(w, "a notice code", 1, 99_999) for w in word.split(",")])
        case "FREEZE":
            gateway.freeze()
        case "UNFREEZE":
            gateway.unfreeze()
        case "DROP":
            if words:
                _choice(word, usage, ("reset", "rst"))
            return f"OK dropped {await gateway.drop_clients(reset=bool(words))} client(s)"
        case "LATENCY":
            gateway.set_latency(_seconds(word, "SECONDS", high=60.0))
        case "GARBAGE":
            return f"OK garbage sent to {await gateway.send_garbage()} client(s)"
    return f"OK {cmd.lower()}"


async def control(gateway: SimulatedGateway, line: str) -> str:
    """Carry out one control command; the answer starts with OK or ERROR, like IBC's.

    A bad argument answers ``ERROR <what is expected>`` and changes nothing.
    """
    words = line.strip().split()
    if not words:
        return f"ERROR empty command; commands: {CONTROL_HELP}"
    cmd, args = words[0].upper(), words[1:]
    try:
        return await _run(gateway, cmd, args)
    except BadCommand as e:
        return f"ERROR {cmd.lower()}: {e}"


class ControlServer:
    """Text lines in, one answer line out: `gwbot simctl stop` talks to it."""

    def __init__(self, gateway: SimulatedGateway, port: int = 7462) -> None:
        self.gateway = gateway
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        # Loopback only: whoever reaches it can stop the Gateway.
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("control port listening on 127.0.0.1:%s", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                answer = await control(self.gateway, line.decode(errors="replace"))
                log.info("control: %s -> %s", line.decode(errors="replace").strip(), answer)
                writer.write(answer.encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


async def send_control(host: str, port: int, command: str, timeout: float = 5.0) -> str:
    """Send one command to a ControlServer and return its answer line."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(command.strip().encode() + b"\n")
            await writer.drain()
            answer = (await reader.readline()).decode().strip()
    except (OSError, TimeoutError) as e:
        return f"{NO_CONTROL_PORT} at {host}:{port} ({e or type(e).__name__})"
    finally:
        if writer is not None:  # on every path, a timeout included: no socket left behind
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return answer or "ERROR no answer"


async def serve(host: str, port: int, accounts: Sequence[str] = DEFAULT_ACCOUNTS, control_port: int = 7462,
                *, until: asyncio.Event) -> None:
    """Run a simulated Gateway (and its control port) until ``until`` is set or the task is cancelled."""
    async with SimulatedGateway(host, port, accounts) as gateway:
        ctl = ControlServer(gateway, control_port)
        if control_port:  # 0: no control port
            await ctl.start()
        try:
            await until.wait()
        finally:
            await ctl.stop()
