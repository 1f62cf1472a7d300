"""IBKRClient: an ib_async connection that survives a real Gateway's lifecycle.

Async only, in the caller's event loop. Adds what ib_async leaves out: typed failures that name
the layer that broke, fail-fast on 326 and on non-API ports, a heartbeat that notices a frozen
Gateway, and auto-reconnect (tenacity) that retries as soon as the Gateway's port is back.

The seed's scripts use exactly ``IBKRClient(host, port, client_id)``, ``await connect()``,
``await is_connected()`` and ``await disconnect()``; those keep working.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ib_async import IB
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from bot.config import GatewayConfig
from bot.ibkr import notices
from bot.ibkr.errors import (
    ApiNotReady,
    ClientIdInUse,
    ConnectTimeout,
    GatewayClosedConnection,
    GatewayError,
    GatewayRefused,
    HandshakeTimeout,
    HostUnresolvable,
    LiveAccountRefused,
    NotAnApiPort,
    NotConnected,
    PingTimeout,
    StartupSyncFailed,
    is_paper_account,
)
from bot.ibkr.events import (
    Connected,
    Disconnected,
    DisconnectReason,
    EventBus,
    GatewayNotice,
    Heartbeat,
    NoticeKind,
    ReconnectFailedAttempt,
    ReconnectGaveUp,
    Reconnected,
    Reconnecting,
)

log = logging.getLogger(__name__)

# A TWS API frame is a few hundred bytes; a "length" beyond this means we are not talking to one.
_MAX_SANE_FRAME = 1 << 20


class ConnectionState(StrEnum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"


_SEED = GatewayConfig()  # the checklist's values, kept in one place: bot/config.py


@dataclass(frozen=True)
class ClientOptions:
    reconnect_delay: float = _SEED.reconnect_delay
    max_reconnect_attempts: int = _SEED.max_reconnect_attempts
    connect_timeout: float = _SEED.connect_timeout
    heartbeat_interval: float = _SEED.heartbeat_interval
    heartbeat_timeout: float = _SEED.heartbeat_timeout
    allow_live: bool = _SEED.allow_live
    auto_reconnect: bool = True
    # How often the reconnect loop knocks on the port while the Gateway is down.
    probe_interval: float = 0.25
    # ib_async users report reqCurrentTime going unanswered when sent < ~1 s after the last one.
    min_ping_spacing: float = 1.0


@dataclass(frozen=True)
class FarmStatus:
    farm: str
    notice: NoticeKind
    code: int


@dataclass(frozen=True)
class ClientStatus:
    state: ConnectionState
    host: str
    port: int
    client_id: int
    server_version: int | None
    connection_time: str
    accounts: tuple[str, ...]
    connected_since: datetime | None
    link_ok: bool
    farms: tuple[FarmStatus, ...]
    last_rtt: float | None

    @property
    def uptime(self) -> float | None:
        if self.connected_since is None:
            return None
        return (datetime.now(UTC) - self.connected_since).total_seconds()


@dataclass
class _HandshakeWatch:
    """Reads the first bytes the Gateway sends, to tell "no answer" from "answered" from "garbage"."""

    buf: bytes = b""
    server_version: int | None = None
    connection_time: str = ""
    garbage: bool = False

    @property
    def answered(self) -> bool:
        return self.server_version is not None

    def feed(self, data: bytes) -> None:
        if self.answered or self.garbage:
            return
        self.buf += data
        if len(self.buf) < 4:
            return
        (size,) = struct.unpack(">I", self.buf[:4])
        if size == 0 or size > _MAX_SANE_FRAME:
            self.garbage = True
            return
        if len(self.buf) < 4 + size:
            return
        fields = self.buf[4 : 4 + size].split(b"\0")
        if len(fields) >= 2 and fields[0].isdigit():
            self.server_version = int(fields[0])
            self.connection_time = fields[1].decode(errors="replace")
        else:
            self.garbage = True


@dataclass
class _Session:
    """One ib_async connection and what we learned on it."""

    ib: IB
    watch: _HandshakeWatch = field(default_factory=_HandshakeWatch)
    last_socket_error: str = ""
    connected_at: datetime | None = None


async def probe_port(host: str, port: int, timeout: float) -> None:
    """Open and close a TCP connection; raise the typed error for why it failed."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise HostUnresolvable(f"Cannot resolve host '{host}': {e.strerror}", host=host, port=port) from e
    family, _, _, _, addr = infos[0]
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(addr[0], port, family=family)
    except ConnectionRefusedError as e:
        raise GatewayRefused(
            f"Connection refused on {host}:{port}: the Gateway is not running or not listening on that port",
            host=host, port=port,
        ) from e
    except TimeoutError as e:
        raise ConnectTimeout(
            f"Connection to {host}:{port} timed out after {timeout:g} s: firewall or wrong host",
            host=host, port=port,
        ) from e
    except OSError as e:
        raise GatewayRefused(f"Cannot connect to {host}:{port}: {e.strerror or e}", host=host, port=port) from e
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def port_accepts(host: str, port: int, timeout: float) -> bool:
    try:
        await probe_port(host, port, timeout)
    except GatewayError:
        return False
    return True


class IBKRClient:
    """Connection to one IB Gateway. Subscribe to :attr:`events` for typed lifecycle events."""

    def __init__(self, host: str, port: int, client_id: int, **options: Any) -> None:
        self.host = host
        self.port = int(port)
        self.client_id = int(client_id)
        self.options = ClientOptions(**options)
        self.events = EventBus()
        self._state = ConnectionState.DISCONNECTED
        self._session: _Session | None = None
        self._ping_lock = asyncio.Lock()
        self._last_ping_sent = 0.0
        self._last_pong = 0.0
        self._last_rtt: float | None = None
        self._link_ok = True
        self._farms: dict[str, FarmStatus] = {}
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, gw: GatewayConfig, **overrides: Any) -> IBKRClient:
        options: dict[str, Any] = {
            "reconnect_delay": gw.reconnect_delay,
            "max_reconnect_attempts": gw.max_reconnect_attempts,
            "connect_timeout": gw.connect_timeout,
            "heartbeat_interval": gw.heartbeat_interval,
            "heartbeat_timeout": gw.heartbeat_timeout,
            "allow_live": gw.allow_live,
        } | overrides
        return cls(gw.host, gw.port, gw.client_id, **options)

    # ----------------------------------------------------------------- state
    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def ib(self) -> IB | None:
        """The live ib_async object (for requests gwbot does not wrap), or None."""
        return self._session.ib if self._session else None

    async def is_connected(self) -> bool:
        return self._connected()

    def _connected(self) -> bool:
        s = self._session
        return self._state is ConnectionState.CONNECTED and s is not None and s.ib.isConnected()

    def status(self) -> ClientStatus:
        s = self._session if self._connected() else None
        return ClientStatus(
            state=self._state,
            host=self.host,
            port=self.port,
            client_id=self.client_id,
            server_version=s.ib.client.serverVersion() if s else None,
            connection_time=s.watch.connection_time if s else "",
            accounts=tuple(s.ib.managedAccounts()) if s else (),
            connected_since=s.connected_at if s else None,
            link_ok=self._link_ok,
            farms=tuple(self._farms.values()),
            last_rtt=self._last_rtt,
        )

    # ------------------------------------------------------------ connecting
    async def connect(self) -> None:
        """Connect and complete ib_async's start-up sync; raise a GatewayError subclass on failure."""
        if self._connected():
            return
        await self._cancel_reconnect()
        self._state = ConnectionState.CONNECTING
        try:
            await self._open_session()
        except BaseException:
            self._state = ConnectionState.DISCONNECTED
            raise
        self._on_session_up()

    async def _open_session(self) -> None:
        opts = self.options
        await probe_port(self.host, self.port, opts.connect_timeout)
        session = _Session(ib=IB())
        fail_fast: asyncio.Future[GatewayError] = asyncio.get_running_loop().create_future()
        self._watch_handshake(session, fail_fast)
        connecting = asyncio.ensure_future(
            session.ib.connectAsync(
                self.host, self.port, self.client_id, timeout=opts.connect_timeout, raiseSyncErrors=True
            )
        )
        try:
            await asyncio.wait({connecting, fail_fast}, return_when=asyncio.FIRST_COMPLETED)
            if fail_fast.done():
                raise fail_fast.result()
            self._raise_connect_error(session, connecting)
        except BaseException:
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
            # Low-level close: IB.disconnect() itself raises when the API never became ready.
            session.ib.client.disconnect()
            raise
        finally:
            fail_fast.cancel()
        accounts = session.ib.managedAccounts()
        live = [a for a in accounts if not is_paper_account(a)]
        if live and not opts.allow_live:
            session.ib.disconnect()
            raise LiveAccountRefused(
                f"Refusing live account {', '.join(live)}: gwbot tests paper accounts unless ibkr.allow_live is true",
                host=self.host, port=self.port,
            )
        session.connected_at = datetime.now(UTC)
        self._session = session

    def _watch_handshake(self, session: _Session, fail_fast: asyncio.Future[GatewayError]) -> None:
        """Hook ib_async's socket and error stream so that bad cases fail at once, not on timeout."""
        ib, where = session.ib, {"host": self.host, "port": self.port}

        def fail(err: GatewayError) -> None:
            if not fail_fast.done():
                fail_fast.set_result(err)

        def on_data(data: bytes) -> None:
            session.watch.feed(data)
            if session.watch.garbage:
                fail(NotAnApiPort(
                    f"{self.host}:{self.port} answered, but not with the TWS API protocol: this is not a Gateway API port",
                    **where,
                ))

        def on_error(req_id: int, code: int, text: str, _contract: Any) -> None:
            if code == 326:
                fail(ClientIdInUse(f"Client id {self.client_id} is already in use on {self.host}:{self.port} (error 326)", **where))
            else:
                self._on_gateway_error(req_id, code, text, _contract)

        def on_api_error(msg: str) -> None:
            session.last_socket_error = msg
            if not ib.client.isReady() and not fail_fast.done():
                # 326 arrives just before the close; give it a moment to win.
                asyncio.get_running_loop().call_later(0.05, fail, GatewayClosedConnection(
                    f"The Gateway at {self.host}:{self.port} closed the connection before the API was ready",
                    **where,
                ))

        ib.client.conn.hasData += on_data
        ib.errorEvent += on_error
        ib.client.apiError += on_api_error
        ib.disconnectedEvent += lambda: self._on_socket_closed(session)

    def _raise_connect_error(self, session: _Session, connecting: asyncio.Future[Any]) -> None:
        """Turn ib_async's outcome into a typed error, or return when it connected."""
        exc = connecting.exception()
        if exc is None:
            return
        where = {"host": self.host, "port": self.port}
        t = self.options.connect_timeout
        if isinstance(exc, TimeoutError):
            if not session.watch.answered:
                raise HandshakeTimeout(
                    f"{self.host}:{self.port} accepts connections but did not answer the API handshake within {t:g} s",
                    **where,
                ) from exc
            raise ApiNotReady(
                f"The Gateway answered the handshake (server version {session.watch.server_version}) but sent no "
                f"accounts / next order id within {t:g} s: it is not logged in or a dialog is pending",
                **where,
            ) from exc
        if isinstance(exc, ConnectionError) and isinstance(exc.args[0] if exc.args else None, list):
            raise StartupSyncFailed(f"Start-up sync did not complete: {'; '.join(exc.args[0])}", **where) from exc
        if isinstance(exc, ConnectionRefusedError):
            raise GatewayRefused(f"Connection refused on {self.host}:{self.port}", **where) from exc
        raise GatewayClosedConnection(f"Connection to {self.host}:{self.port} failed: {exc}", **where) from exc

    def _on_session_up(self) -> None:
        s = self._session
        assert s is not None
        self._state = ConnectionState.CONNECTED
        self._last_pong = time.monotonic()
        self._link_ok = True
        log.info("connected to %s:%s as client %s, server version %s, accounts %s",
                 self.host, self.port, self.client_id, s.ib.client.serverVersion(), ",".join(s.ib.managedAccounts()))
        self.events.emit(Connected(
            server_version=s.ib.client.serverVersion(),
            accounts=tuple(s.ib.managedAccounts()),
            connection_time=s.watch.connection_time,
        ))
        self._heartbeat_task = asyncio.create_task(self._heartbeat_loop(), name=f"heartbeat {self.host}:{self.port}")

    # -------------------------------------------------------------- notices
    def _on_gateway_error(self, req_id: int, code: int, text: str, _contract: Any) -> None:
        kind = notices.notice_kind(code)
        if kind is None:
            log.info("gateway error %s (req %s): %s", code, req_id, text)
            return
        farm = notices.farm_name(code, text) if kind.name.startswith("FARM") else ""
        if farm:
            self._farms[farm] = FarmStatus(farm, kind, code)
        if kind is NoticeKind.LINK_LOST:
            self._link_ok = False
        elif kind in (NoticeKind.LINK_RESTORED, NoticeKind.LINK_RESTORED_DATA_LOST):
            self._link_ok = True
        log.info("gateway notice %s", notices.explain(code, text))
        self.events.emit(GatewayNotice(code=code, message=text, notice=kind, farm=farm))

    # ---------------------------------------------------------------- drops
    def _on_socket_closed(self, session: _Session) -> None:
        # ib_async may fire disconnectedEvent twice, and also for our own disconnect: act once,
        # and only for the session that is current and was up.
        if session is not self._session or self._state is not ConnectionState.CONNECTED:
            return
        msg = session.last_socket_error
        reason = DisconnectReason.RESET if "reset" in msg.lower() else (
            DisconnectReason.PEER_CLOSED if not msg or "closed" in msg.lower() else DisconnectReason.OTHER)
        self._drop(reason, msg)

    def _drop(self, reason: DisconnectReason, detail: str) -> None:
        """The link is gone without our asking: announce it and start reconnecting."""
        dropped_at = time.monotonic()
        session, self._session = self._session, None
        self._state = ConnectionState.DISCONNECTED
        self._stop_heartbeat()
        if session is not None:
            session.ib.client.disconnect()
        log.warning("connection to %s:%s lost: %s (%s)", self.host, self.port, reason, detail or "no detail")
        self.events.emit(Disconnected(reason=reason, detail=detail))
        if self.options.auto_reconnect:
            self._state = ConnectionState.RECONNECTING
            self._reconnect_task = asyncio.create_task(self._reconnect(dropped_at), name="reconnect")

    async def _reconnect(self, dropped_at: float) -> None:
        opts = self.options
        attempt = 0

        async def between_attempts(seconds: float) -> None:
            await self._wait_for_gateway(seconds, first=False)

        try:
            await self._wait_for_gateway(opts.reconnect_delay, first=True)
            async for retry in AsyncRetrying(
                stop=stop_after_attempt(max(opts.max_reconnect_attempts, 1)),
                wait=wait_fixed(opts.reconnect_delay),
                sleep=between_attempts,
                retry=retry_if_exception_type(GatewayError),
                reraise=True,
            ):
                with retry:
                    attempt = retry.retry_state.attempt_number
                    self.events.emit(Reconnecting(attempt=attempt, max_attempts=opts.max_reconnect_attempts, delay=opts.reconnect_delay))
                    try:
                        await self._open_session()
                    except GatewayError as e:
                        log.info("reconnect attempt %s/%s failed: %s", attempt, opts.max_reconnect_attempts, e)
                        self.events.emit(ReconnectFailedAttempt(attempt=attempt, error=str(e)))
                        raise
        except GatewayError as e:
            self._reconnect_task = None
            self._state = ConnectionState.DISCONNECTED
            downtime = time.monotonic() - dropped_at
            log.error("gave up reconnecting to %s:%s after %s attempts (%.1f s): %s", self.host, self.port, attempt, downtime, e)
            self.events.emit(ReconnectGaveUp(attempts=attempt, downtime=downtime, last_error=str(e)))
            return
        self._reconnect_task = None
        downtime = time.monotonic() - dropped_at
        self._on_session_up()
        log.info("reconnected to %s:%s after %.2f s, %s attempt(s)", self.host, self.port, downtime, attempt)
        self.events.emit(Reconnected(downtime=downtime, attempts=attempt))

    async def _wait_for_gateway(self, seconds: float, *, first: bool) -> None:
        """Wait up to ``seconds``, returning early once the Gateway is back.

        "Back" means the port accepts after having refused during this wait; on the first wait
        an open port counts at once (a dropped link with the Gateway still up). A port that is
        open throughout later waits gets the full delay, so that a fast failure such as 326
        does not burn every attempt in a second.
        """
        opts = self.options
        deadline = time.monotonic() + seconds
        seen_down = False
        while True:
            up = await port_accepts(self.host, self.port, timeout=max(opts.probe_interval * 4, 1.0))
            if up and (first or seen_down):
                return
            seen_down = seen_down or not up
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(min(opts.probe_interval, remaining))

    # ------------------------------------------------------------ heartbeat
    async def ping(self, timeout: float | None = None) -> float:
        """Round-trip time of one reqCurrentTime, in seconds. Pings never overlap."""
        async with self._ping_lock:
            s = self._session
            if not self._connected() or s is None:
                raise NotConnected(f"Not connected to {self.host}:{self.port}", host=self.host, port=self.port)
            wait = self._last_ping_sent + self.options.min_ping_spacing - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            limit = timeout if timeout is not None else self.options.heartbeat_timeout
            self._last_ping_sent = start = time.monotonic()
            try:
                await asyncio.wait_for(s.ib.reqCurrentTimeAsync(), limit)
            except TimeoutError as e:
                self.events.emit(Heartbeat(rtt=None))
                raise PingTimeout(
                    f"The Gateway did not answer a heartbeat within {limit:g} s", host=self.host, port=self.port
                ) from e
            except ConnectionError as e:
                raise NotConnected(f"Not connected to {self.host}:{self.port}", host=self.host, port=self.port) from e
            rtt = time.monotonic() - start
            self._last_pong = time.monotonic()
            self._last_rtt = rtt
            self.events.emit(Heartbeat(rtt=rtt))
            return rtt

    async def _heartbeat_loop(self) -> None:
        interval = self.options.heartbeat_interval
        while self._connected():
            # Someone else's recent successful ping (a soak) counts as a heartbeat.
            wait = self._last_pong + interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            try:
                await self.ping()
            except PingTimeout as e:
                self._drop(DisconnectReason.HEARTBEAT_TIMEOUT, str(e))
                return
            except NotConnected:
                return

    def _stop_heartbeat(self) -> None:
        task, self._heartbeat_task = self._heartbeat_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    # ----------------------------------------------------------- disconnect
    async def _cancel_reconnect(self) -> None:
        task, self._reconnect_task = self._reconnect_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def disconnect(self) -> None:
        """Graceful, local disconnect: cancels heartbeat and any reconnect, emits Disconnected(LOCAL)."""
        await self._cancel_reconnect()
        self._stop_heartbeat()
        session, self._session = self._session, None
        was_connected = self._state is ConnectionState.CONNECTED
        self._state = ConnectionState.DISCONNECTED
        if session is None:
            return
        session.ib.disconnect()
        log.info("disconnected from %s:%s", self.host, self.port)
        if was_connected:
            self.events.emit(Disconnected(reason=DisconnectReason.LOCAL))

    async def __aenter__(self) -> IBKRClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()
