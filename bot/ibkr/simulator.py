"""A simulated IB Gateway: a real TCP server speaking the TWS API wire protocol.

The unmodified ib_async client connects to it with default arguments. It can be stopped,
restarted, frozen and made to misbehave the way real Gateways do, from tests (async methods)
or from another terminal (a line-based control port modelled on IBC's command server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

log = logging.getLogger(__name__)

SERVER_VERSION = 178
DEFAULT_ACCOUNTS = ("DUO779750",)
MAX_FRAME = 1 << 20

# Incoming message ids (client -> Gateway) that the start-up sync and heartbeat use.
START_API, REQ_POSITIONS, REQ_OPEN_ORDERS, REQ_COMPLETED_ORDERS = 71, 61, 5, 99
REQ_ACCOUNT_UPDATES, REQ_ACCOUNT_UPDATES_MULTI, REQ_EXECUTIONS = 6, 76, 7
REQ_ACCOUNT_SUMMARY, REQ_CURRENT_TIME = 62, 49
# Outgoing message ids (Gateway -> client).
ERR_MSG, NEXT_VALID_ID, MANAGED_ACCTS, CURRENT_TIME = 4, 9, 15, 49
POSITION_END, OPEN_ORDER_END, COMPLETED_ORDERS_END = 62, 53, 102
ACCT_UPDATE_TIME, ACCT_DOWNLOAD_END, ACCOUNT_UPDATE_MULTI_END = 8, 54, 74
EXEC_DETAILS_END, ACCOUNT_SUMMARY_END = 55, 64

NOTICE_TEXTS = {
    326: "Unable to connect as the client id is already in use. Retry with a unique client id.",
    1100: "Connectivity between IB and Trader Workstation has been lost.",
    1101: "Connectivity between IB and Trader Workstation has been restored - data lost.",
    1102: "Connectivity between IB and Trader Workstation has been restored - data maintained.",
    2103: "Market data farm connection is broken:usfarm",
    2104: "Market data farm connection is OK:usfarm",
    2105: "HMDS data farm connection is broken:ushmds",
    2106: "HMDS data farm connection is OK:ushmds",
    2157: "Sec-def data farm connection is broken:secdefnj",
    2158: "Sec-def data farm connection is OK:secdefnj",
}
CONNECT_NOTICES = (2104, 2106, 2158)


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


@dataclass(frozen=True)
class ClientInfo:
    client_id: int | None
    peer: str
    ready: bool
    connected_at: datetime


class _Client:
    """One API connection: its socket, its state, and a queue that holds requests while frozen."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.peer = f"{peer[0]}:{peer[1]}"
        self.client_id: int | None = None
        self.version = 0
        self.ready = False
        self.connected_at = datetime.now(UTC)

    def info(self) -> ClientInfo:
        return ClientInfo(self.client_id, self.peer, self.ready, self.connected_at)

    def close(self, reset: bool = False) -> None:
        if reset:
            sock = self.writer.get_extra_info("socket")
            if sock is not None:
                # SO_LINGER 0: close() sends RST instead of FIN, like a crashed process.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.close()


class SimulatedGateway:
    """An IB Gateway stand-in on ``host:port`` (port 0: a free one, kept across restarts)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, accounts: Sequence[str] = DEFAULT_ACCOUNTS,
                 server_version: int = SERVER_VERSION, next_valid_id: int = 1) -> None:
        self.host = host
        self.port = port
        self.accounts = tuple(accounts)
        self.server_version = server_version
        self.next_valid_id = next_valid_id
        self.latency = 0.0
        self.ready = True
        self._server: asyncio.Server | None = None
        self._clients: set[_Client] = set()
        self._tasks: set[asyncio.Task[None]] = set()
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
    def clients(self) -> list[ClientInfo]:
        return [c.info() for c in self._clients]

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._serve_client, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("simulated Gateway listening on %s:%s (accounts %s)", self.host, self.port, ",".join(self.accounts))

    async def stop(self) -> None:
        """Like quitting the Gateway: the port closes and every API client is disconnected."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for client in list(self._clients):
            client.close()
        await server.wait_closed()
        await self._settle()
        log.info("simulated Gateway on %s:%s stopped", self.host, self.port)

    async def restart(self, down_for: float = 0.0) -> None:
        await self.stop()
        await asyncio.sleep(down_for)
        await self.start()

    async def __aenter__(self) -> SimulatedGateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.unfreeze()
        await self.stop()
        await self._settle()

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
        """False: answer the handshake but never send accounts / next id (not logged in, dialog open)."""
        self.ready = ready
        log.info("simulated Gateway %s", "ready" if ready else "NOT ready (as if not logged in)")

    def set_latency(self, seconds: float) -> None:
        self.latency = max(0.0, seconds)
        log.info("simulated Gateway latency %.3f s", self.latency)

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
            await self._send(client, self._error(client, -1, code, text or NOTICE_TEXTS.get(code, f"notice {code}")))
        log.info("simulated Gateway sent notice %s to %d client(s)", code, len(ready))
        return len(ready)

    async def send_garbage(self, data: bytes = b"\xde\xad\xbe\xef garbage \xff\xff") -> int:
        for client in self._clients:
            client.writer.write(data)
        log.info("simulated Gateway sent %d garbage bytes to %d client(s)", len(data), len(self._clients))
        return len(self._clients)

    async def wait_for_clients(self, count: int, timeout: float = 5.0, *, ready: bool = True) -> None:
        """Wait until exactly ``count`` clients are connected (and ready, by default)."""
        def enough() -> bool:
            return sum(1 for c in self._clients if c.ready or not ready) == count

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(enough)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -------------------------------------------------------------- serving
    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _Client(reader, writer)
        if self._server is None:  # accepted in the instant of a stop
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._clients.add(client)
        log.debug("connection from %s", client.peer)
        await self._notify()
        try:
            if await self._handshake(client):
                while True:
                    fields = await read_frame(reader)
                    await self._thawed.wait()
                    await self._handle(client, fields)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except ValueError as e:
            log.warning("client %s (id %s) sent a malformed message: %s; closing it", client.peer, client.client_id, e)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("client %s (id %s): unexpected error; closing it", client.peer, client.client_id)
        finally:
            self._clients.discard(client)
            client.close()
            self._tasks.discard(task)
            if client.version:
                log.info("client %s (id %s) disconnected", client.peer, client.client_id)
            else:  # closed before the handshake: a port probe (gwbot knocks between reconnect attempts)
                log.debug("connection from %s closed before the API handshake", client.peer)
            with contextlib.suppress(RuntimeError):
                await self._notify()

    async def _handshake(self, client: _Client) -> bool:
        prefix = await client.reader.readexactly(4)
        if prefix != b"API\0":
            log.warning("client %s did not start with API\\0 (got %r); closing it", client.peer, prefix)
            return False
        low, high = parse_version_range((await read_payload(client.reader)).decode(errors="replace"))
        await self._thawed.wait()
        version = min(high, self.server_version)
        if version < low:
            log.warning("client %s needs API version >= %d, we speak <= %d; closing it", client.peer, low, version)
            return False
        client.version = version
        log.info("API client %s connected, version %d", client.peer, version)
        await self._send(client, frame(version, datetime.now(UTC).strftime("%Y%m%d %H:%M:%S UTC")))
        return True

    async def _send(self, client: _Client, *messages: bytes) -> None:
        if self.latency:
            await asyncio.sleep(self.latency)
        for message in messages:
            client.writer.write(message)
        with contextlib.suppress(ConnectionError):
            await client.writer.drain()

    def _error(self, client: _Client, req_id: int, code: int, text: str) -> bytes:
        # From server version 166 ib_async drops an error message without advancedOrderRejectJson.
        if client.version >= 166:
            return frame(ERR_MSG, 2, req_id, code, text, "")
        return frame(ERR_MSG, 2, req_id, code, text)

    async def _handle(self, client: _Client, fields: list[str]) -> None:
        if not fields or not fields[0].lstrip("-").isdigit():
            raise ValueError(f"message without a numeric id: {fields[:3]}")
        msg_id = int(fields[0])
        if msg_id == START_API:
            await self._start_api(client, fields)
            return
        reply = self._reply(client, msg_id, fields)
        if reply:
            await self._send(client, *reply)
        else:
            log.debug("client %s: ignoring request %s %s", client.client_id, msg_id, fields[1:4])

    def _reply(self, client: _Client, msg_id: int, f: list[str]) -> list[bytes]:
        """The answer to one request of ib_async's start-up sync or heartbeat; [] for the rest."""
        acct = self.accounts[0] if self.accounts else ""
        match msg_id:
            case 49:  # reqCurrentTime
                return [frame(CURRENT_TIME, 1, int(time.time()))]
            case 61:  # reqPositions
                return [frame(POSITION_END, 1)]
            case 5:  # reqOpenOrders
                return [frame(OPEN_ORDER_END, 1)]
            case 99:  # reqCompletedOrders
                return [frame(COMPLETED_ORDERS_END)]
            case 6 if len(f) > 2 and f[2] == "1":  # reqAccountUpdates(subscribe)
                account = f[3] if len(f) > 3 and f[3] else acct
                return [frame(ACCT_UPDATE_TIME, 1, datetime.now(UTC).strftime("%H:%M")),
                        frame(ACCT_DOWNLOAD_END, 1, account)]
            case 76 if len(f) > 2:  # reqAccountUpdatesMulti
                return [frame(ACCOUNT_UPDATE_MULTI_END, 1, f[2])]
            case 7 if len(f) > 2:  # reqExecutions
                return [frame(EXEC_DETAILS_END, 1, f[2])]
            case 62 if len(f) > 2:  # reqAccountSummary (ib_async sends it after 1102)
                return [frame(ACCOUNT_SUMMARY_END, 1, f[2])]
        return []

    async def _start_api(self, client: _Client, fields: list[str]) -> None:
        client_id = int(fields[2]) if len(fields) > 2 and fields[2].lstrip("-").isdigit() else 0
        client.client_id = client_id
        if any(c is not client and c.client_id == client_id and c.ready for c in self._clients):
            log.warning("client %s asked for client id %s, already in use: 326", client.peer, client_id)
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
            frame(NEXT_VALID_ID, 1, self.next_valid_id),
            *(self._error(client, -1, code, NOTICE_TEXTS[code]) for code in CONNECT_NOTICES),
        )
        log.info("client %s ready as client id %s", client.peer, client_id)
        await self._notify()


# ------------------------------------------------------------------ control
CONTROL_HELP = ("STATUS | STOP | START | RESTART [seconds] | FREEZE | UNFREEZE | DROP [reset] | NOTICE <code> "
                "| LATENCY <seconds> | GARBAGE | READY on|off")


async def control(gateway: SimulatedGateway, line: str) -> str:
    """Carry out one control command; the answer starts with OK or ERROR, like IBC's."""
    words = line.strip().split()
    if not words:
        return f"ERROR empty command; commands: {CONTROL_HELP}"
    cmd, args = words[0].upper(), words[1:]
    try:
        match cmd:
            case "STATUS":
                ids = ",".join(str(c.client_id) for c in gateway.clients if c.ready) or "none"
                return (f"OK {'running' if gateway.running else 'stopped'} port={gateway.port} "
                        f"frozen={gateway.frozen} ready={gateway.ready} latency={gateway.latency:g} clients={ids}")
            case "STOP":
                await gateway.stop()
            case "START":
                await gateway.start()
            case "RESTART":
                await gateway.restart(float(args[0]) if args else 0.0)
            case "FREEZE":
                gateway.freeze()
            case "UNFREEZE":
                gateway.unfreeze()
            case "DROP":
                n = await gateway.drop_clients(reset=bool(args) and args[0].lower() == "reset")
                return f"OK dropped {n} client(s)"
            case "NOTICE":
                n = await gateway.send_notice(int(args[0]))
                return f"OK notice {args[0]} sent to {n} client(s)"
            case "LATENCY":
                gateway.set_latency(float(args[0]))
            case "GARBAGE":
                n = await gateway.send_garbage()
                return f"OK garbage sent to {n} client(s)"
            case "READY":
                gateway.set_ready(not args or args[0].lower() in ("on", "1", "true", "yes"))
            case _:
                return f"ERROR unknown command {cmd}; commands: {CONTROL_HELP}"
    except (IndexError, ValueError):
        return f"ERROR bad arguments for {cmd}; commands: {CONTROL_HELP}"
    return f"OK {cmd.lower()}"


class ControlServer:
    """Text lines in, one answer line out: `gwbot simctl stop` talks to it."""

    def __init__(self, gateway: SimulatedGateway, host: str = "127.0.0.1", port: int = 7462) -> None:
        self.gateway = gateway
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("control port listening on %s:%s", self.host, self.port)

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
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(command.strip().encode() + b"\n")
            await writer.drain()
            answer = (await reader.readline()).decode().strip()
            writer.close()
    except (OSError, TimeoutError) as e:
        return f"ERROR no simulated Gateway control port at {host}:{port} ({e or type(e).__name__})"
    return answer or "ERROR no answer"


async def serve(host: str, port: int, accounts: Sequence[str] = DEFAULT_ACCOUNTS, control_port: int = 7462,
                until: asyncio.Event | None = None) -> None:
    """Run a simulated Gateway (and its control port) until ``until`` is set or the task is cancelled."""
    gateway = SimulatedGateway(host, port, accounts)
    await gateway.start()
    ctl = ControlServer(gateway, "127.0.0.1", control_port) if control_port else None
    if ctl is not None:
        await ctl.start()
    try:
        await (until or asyncio.Event()).wait()
    finally:
        if ctl is not None:
            await ctl.stop()
        await gateway.stop()
