"""A simulated IB Gateway: a real TCP server speaking the TWS API wire protocol.

The unmodified ib_async client connects to it with default arguments. It can be stopped, restarted, frozen
and made to misbehave the way real Gateways do, from tests (async methods) or from another terminal
(bot.lab.simctl: a line-based control port modelled on IBC's command server; bot.lab.wire: its framing).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.lab import wire
from bot.lab.ibc_sim import SimulatedIbc

log = logging.getLogger(__name__)



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

    def __init__(self, host: str = "127.0.0.1", port: int = 0, accounts: Sequence[str] = wire.DEFAULT_ACCOUNTS) -> None:
        self.host = host
        self.port = port
        self.accounts = tuple(accounts)
        self.connect_notices: tuple[int, ...] = wire.CONNECT_NOTICES
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
        self._clients: set[wire.Client] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._jobs: dict[str, asyncio.Task[None]] = {}  # background timers: restart, ready, reset
        self._until: dict[str, float] = {}  # when each timer ends (monotonic), for status
        self._late: set[asyncio.Task[None]] = set()  # answers held back by `slow`
        self._thawed = asyncio.Event()
        self._thawed.set()
        self._changed = asyncio.Condition()
        self.ibc = SimulatedIbc(self)  # IBC beside it: its command server is the control port's

    # ------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def frozen(self) -> bool:
        return not self._thawed.is_set()

    @property
    def clients(self) -> list[wire.Client]:
        return list(self._clients)

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._serve_client, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        self.ibc.stopping = False  # a new Gateway process
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
        """Forget a restart still counting down, IBC's too (an explicit stop or start overrides it)."""
        self._cancel_job("restart")
        self._cancel_job("ibc")
        self.ibc.pending = None

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

    def schedule(self, name: str, seconds: float, coro: Coroutine[object, object, None]) -> None:
        """Run ``coro`` as the timer ``name`` (replacing one of that name); close() cancels it."""
        self._start_job(name, seconds, coro)

    def _start_job(self, name: str, seconds: float, coro: Coroutine[object, object, None]) -> None:
        self._cancel_job(name)
        task = asyncio.create_task(coro, name=f"simulated-gateway-{name}")
        self._jobs[name], self._until[name] = task, time.monotonic() + seconds
        task.add_done_callback(lambda t: self._job_done(name, t))

    def _job_done(self, name: str, task: asyncio.Task[None]) -> None:
        if self._jobs.get(name) is task:
            self._cancel_job(name)
        if not task.cancelled() and (e := task.exception()) is not None:  # else nobody would ever hear of it
            log.error("simulated Gateway: %s failed: %s", name, e)

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
        if self.frozen:  # close() unfreezes every Gateway: only a real thaw is news
            log.info("simulated Gateway unfrozen")
        self._thawed.set()

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
        for code in (1100, *wire.FARMS_BROKEN):
            n = await self.send_notice(code)

        async def restore() -> None:
            await asyncio.sleep(seconds)
            self.reset = None
            for code in (1101 if lost else 1102, *wire.FARMS_OK):
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
            await self._send(client, self._error(client, -1, code, text or wire.notice_text(code)))
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
        out = self.ibc.faults()
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
        if self.connect_notices != wire.CONNECT_NOTICES:
            out.append("connectnotices " + (",".join(map(str, self.connect_notices)) or "none"))
        return out

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -------------------------------------------------------------- serving
    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = wire.Client(reader, writer)
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
                    fields = await wire.read_frame(reader)
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

    async def _refuse(self, client: wire.Client, how: Reject) -> None:
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

    async def _handshake(self, client: wire.Client) -> bool:
        prefix = await client.reader.readexactly(4)
        if prefix != b"API\0":
            log.warning("client %s did not start with API\\0 (got %r); closing it", client.peer, prefix)
            return False
        low, high = wire.parse_version_range((await wire.read_payload(client.reader)).decode(errors="replace"))
        await self._thawed.wait()
        version = min(high, wire.SERVER_VERSION)
        if version < low:
            log.warning("client %s needs API version >= %d, we speak <= %d; closing it", client.peer, low, version)
            return False
        client.version = version
        log.info("API client %s connected, version %d", client.peer, version)
        await self._send(client, wire.frame(version, datetime.now(UTC).strftime("%Y%m%d %H:%M:%S UTC")))
        return True

    async def _send(self, client: wire.Client, *messages: bytes, delay: float = 0.0) -> None:
        if self.latency or delay:
            await asyncio.sleep(self.latency + delay)
        if client.writer.is_closing():
            return
        for message in messages:
            client.writer.write(message)
        with contextlib.suppress(ConnectionError):
            await client.writer.drain()

    def _error(self, client: wire.Client, req_id: int | str, code: int, text: str) -> bytes:
        # From server version 166 ib_async drops an error message without advancedOrderRejectJson.
        return wire.frame(wire.ERR_MSG, 2, req_id, code, text, *([""] if client.version >= 166 else []))

    async def _handle(self, client: wire.Client, fields: list[str]) -> None:
        if not fields or not fields[0].lstrip("-").isdigit():
            raise ValueError(f"message without a numeric id: {fields[:3]}")
        msg_id = int(fields[0])
        if msg_id == wire.START_API:
            await self._start_api(client, fields)
            return
        if msg_id in self.hang:
            log.info("client %s: request %s left unanswered (hang)", client.client_id, msg_id)
            return
        if msg_id == wire.REQ_CURRENT_TIME and self.reset is not None and self.reset.deaf:
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

    def _reply(self, client: wire.Client, msg_id: int, f: list[str]) -> list[bytes]:
        """What a real Gateway answers to one request; an error for those it cannot serve."""
        acct = self.accounts[0] if self.accounts else ""

        def field(i: int) -> str:
            return f[i] if len(f) > i else ""
        if self.readonly and msg_id in wire.READ_ONLY_REFUSED:
            req_id = {3: field(1), 4: field(2)}.get(msg_id) or wire.UNSET_INTEGER
            return [self._error(client, req_id, 321, wire.READ_ONLY_TEXT.format(tag=wire.READ_ONLY_REFUSED[msg_id]))]
        if msg_id in wire.ENDS:
            return [wire.frame(*wire.ENDS[msg_id])]
        if msg_id in wire.REQ_ID_ENDS and len(f) > 2:
            return [wire.frame(wire.REQ_ID_ENDS[msg_id], 1, f[2])]
        if msg_id in wire.REFUSED:
            at, code, text = wire.REFUSED[msg_id]
            return [self._error(client, field(at) or -1, code, text)]
        match msg_id:
            case 49:  # reqCurrentTime
                return [wire.frame(wire.CURRENT_TIME, 1, int(time.time()))]
            case 6 if field(2) == "1":  # reqAccountUpdates(subscribe)
                return [wire.frame(wire.ACCT_UPDATE_TIME, 1, datetime.now(UTC).strftime("%H:%M")),
                        wire.frame(wire.ACCT_DOWNLOAD_END, 1, field(3) or acct)]
            case _ if msg_id in wire.UNANSWERED:
                return []
            case 17:  # reqManagedAccts
                return [wire.frame(wire.MANAGED_ACCTS, 1, ",".join(self.accounts))]
            case 8:  # reqIds
                return [wire.frame(wire.NEXT_VALID_ID, 1, wire.FIRST_ORDER_ID)]
            case 20:  # reqHistoricalData: fields 3 symbol, 9 exchange, 19 whatToShow
                text = (f"Historical Market Data Service error message:HMDS query returned no data: "
                        f"{field(3)}@{field(9)} {field(19).title()}")
                return [self._error(client, field(1) or -1, 162, text)]
        log.warning("client %s sent request %s %s, which the simulated Gateway does not serve; answering an error",
                    client.client_id, msg_id, f[1:4])
        return [self._error(client, -1, 321, f"Error validating request:-'sim' : cause - "
                                             f"the simulated Gateway does not serve message id {msg_id}.")]

    async def _start_api(self, client: wire.Client, fields: list[str]) -> None:
        client_id = int(fields[2]) if len(fields) > 2 and fields[2].lstrip("-").isdigit() else 0
        client.client_id = client_id
        held = self._held.get(client_id, 0.0) > time.monotonic()
        if held or any(c is not client and c.client_id == client_id and c.ready for c in self._clients):
            log.warning("client %s asked for client id %s, %s: 326", client.peer, client_id,
                        "still held after its client left" if held else "already in use")
            await self._send(client, self._error(client, -1, 326, wire.NOTICE_TEXTS[326]))
            client.close()
            return
        if not self.ready:
            log.info("client %s (id %s) waits: Gateway not ready (no accounts / next id sent)", client.peer, client_id)
            return
        client.ready = True
        await self._send(
            client,
            wire.frame(wire.MANAGED_ACCTS, 1, ",".join(self.accounts)),
            wire.frame(wire.NEXT_VALID_ID, 1, wire.FIRST_ORDER_ID),
            # During a nightly reset a newcomer hears that the link and the farms are down.
            *(self._error(client, -1, code, wire.notice_text(code))
              for code in (self.connect_notices if self.reset is None else (1100, *wire.FARMS_BROKEN))),
        )
        log.info("client %s ready as client id %s", client.peer, client_id)
        await self._notify()
