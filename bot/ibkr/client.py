"""IBKRClient: an ib_async connection that survives a real Gateway's lifecycle.

Async only, in the caller's event loop. Adds what ib_async leaves out: typed failures that name
the layer that broke, fail-fast on 326 and on non-API ports, a heartbeat that notices a frozen
Gateway, and auto-reconnect that knocks until the port is back and joins as soon as the API
is ready. (An explicit loop, not tenacity's Retrying: a refused knock and a Gateway still logging
in must not count as attempts. tenacity's stop and wait objects are the policy it asks.)

The seed's scripts use exactly ``IBKRClient(host, port, client_id)``, ``await connect()``,
``await is_connected()`` and ``await disconnect()``; those keep working.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from ib_async import IB
from tenacity import RetryCallState

from bot.client_ids import ClientRole
from bot.config import GatewayConfig
from bot.ibkr import notices
from bot.ibkr.connecting import HandshakeWatch, probe_port, wait_for_port
from bot.ibkr.connecting import port_accepts as port_accepts  # callers knock through this module too
from bot.ibkr.errors import (
    ApiNotReady,
    ClientIdInUse,
    ConnectionRejected,
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
    Reconnected,
    ReconnectFailedAttempt,
    ReconnectGaveUp,
    Reconnecting,
)
from bot.ibkr.options import ClientOptions, ReconnectPolicy

log = logging.getLogger(__name__)
# Every log record an IBKRClient writes carries its identity under this attribute, so that a
# check can judge its own client's lines and never another client's (see checks.disconnect).
CLIENT_ATTR = "gw_client"

_E = TypeVar("_E", bound=GatewayError)
_DEFAULT_OPTIONS = ClientOptions()  # frozen: one shared default


class ConnectionState(StrEnum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"


@dataclass
class _Session:
    """One ib_async connection and what we learned on it."""

    ib: IB
    watch: HandshakeWatch = field(default_factory=HandshakeWatch)
    last_socket_error: str = ""
    ready_timer: asyncio.TimerHandle | None = None


def _stops(policy: ReconnectPolicy, outage: RetryCallState) -> bool:
    """Whether the policy gives up now: tenacity's stop reads the time since the drop from here."""
    outage.outcome_timestamp = time.monotonic()
    return bool(policy.stop(outage))


class IBKRClient:
    """Connection to one IB Gateway. Subscribe to :attr:`events` for typed lifecycle events."""

    def __init__(self, host: str, port: int, client_id: int, options: ClientOptions = _DEFAULT_OPTIONS) -> None:
        self.host = host
        self.port = int(port)
        self.client_id = int(client_id)
        self.options = options
        self.events = EventBus()
        self.tag = f"{host}:{port}#{client_id}/{id(self):x}"
        self.log = logging.LoggerAdapter(log, {CLIENT_ATTR: self.tag})
        self._state = ConnectionState.DISCONNECTED
        self._session: _Session | None = None
        self._ping_lock = asyncio.Lock()
        self._last_ping_sent = 0.0
        self._last_pong = 0.0
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._disconnects = 0  # disconnect() calls so far: a connect() in flight sees one came

    @classmethod
    def from_config(cls, gw: GatewayConfig, role: ClientRole = ClientRole.CHECK, **overrides: Any) -> IBKRClient:
        """A client for ``gw`` with the client id of ``role``; ``overrides`` replace ClientOptions fields."""
        return cls(gw.host, gw.port, gw.client_id_for(role), ClientOptions.from_config(gw, **overrides))

    # ----------------------------------------------------------------- state
    def _error(self, cls: type[_E], message: str) -> _E:
        """A typed error that names this client's Gateway."""
        return cls(message, host=self.host, port=self.port)

    def _not_connected(self) -> NotConnected:
        return self._error(NotConnected, f"Not connected to {self.host}:{self.port}")

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

    # ------------------------------------------------------------ connecting
    async def connect(self, *, retrying: bool = False) -> None:
        """Connect until the API is ready (accounts, next order id); raise a GatewayError subclass on failure.

        ``retrying``: one try of a caller's retry loop, which gives up on a Gateway not ready yet
        as soon as a reconnect try does (ApiNotReady), so that the next try can join it.
        """
        if self._connected():
            return
        await self._cancel_reconnect()
        self._state = ConnectionState.CONNECTING
        disconnects = self._disconnects
        try:
            await self._open_session(self._retry_ready_wait() if retrying else None)
        except BaseException:
            self._state = ConnectionState.DISCONNECTED
            raise
        if disconnects != self._disconnects:
            # disconnect() came while this connect was on its way: the later call wins, so the
            # session just opened is closed again rather than left running with nobody wanting it.
            session, self._session = self._session, None
            self._state = ConnectionState.DISCONNECTED
            if session is not None:
                session.ib.disconnect()
            raise self._error(NotConnected, f"disconnect() was called while connecting to {self.host}:{self.port}")
        self._on_session_up()

    def _retry_ready_wait(self) -> float:
        return min(self.options.ready_wait, self.options.connect_timeout)

    async def _open_session(self, ready_wait: float | None = None) -> None:
        """One API connection: TCP, handshake, accounts + next order id; nothing else.

        gwbot places no orders and reads no positions, so it skips ib_async's start-up sync
        (positions, open/completed orders, executions): a Read-Only API or a sync request the
        Gateway never answers cannot fail or slow the connection. ``ready_wait``: give up this
        soon once the handshake is answered without accounts (a Gateway still logging in), or
        later on a link too slow for it (HandshakeWatch.ready_wait).
        """
        opts = self.options
        addr = await probe_port(self.host, self.port, opts.connect_timeout)
        session = _Session(ib=IB())
        loop = asyncio.get_running_loop()
        fail_fast: asyncio.Future[GatewayError] = loop.create_future()
        self._watch_handshake(session, fail_fast, ready_wait)
        session.ib.wrapper.clientId = self.client_id
        # Connect to the address the probe reached, so `localhost` -> ::1 (refused) -> 127.0.0.1
        # is settled once, the same way for both.
        connecting = asyncio.ensure_future(
            session.ib.client.connectAsync(addr[0], self.port, self.client_id, opts.connect_timeout))
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
            if session.ready_timer is not None:
                session.ready_timer.cancel()
        accounts = session.ib.managedAccounts()
        live = [a for a in accounts if not is_paper_account(a)]
        if live and not opts.allow_live:
            session.ib.disconnect()
            raise self._error(LiveAccountRefused, f"Refusing live account {', '.join(live)}: gwbot tests paper "
                              "accounts unless ibkr.allow_live is true")
        self._session = session

    def _watch_handshake(self, session: _Session, fail_fast: asyncio.Future[GatewayError],
                         ready_wait: float | None) -> None:
        """Hook ib_async's socket and error stream so that bad cases fail at once, not on timeout."""
        ib = session.ib
        loop = asyncio.get_running_loop()

        def fail(err: GatewayError) -> None:
            if not fail_fast.done():
                fail_fast.set_result(err)

        def not_ready(waited: float) -> None:
            if not ib.client.isReady():
                fail(self._not_ready_error(session, waited))

        def on_data(data: bytes) -> None:
            answered = session.watch.answered
            session.watch.feed(data)
            if session.watch.garbage:
                fail(self._error(NotAnApiPort, f"{self.host}:{self.port} answered, but not with the TWS API "
                                 "protocol: this is not a Gateway API port"))
            elif session.watch.answered and not answered and ready_wait is not None:
                wait = session.watch.ready_wait(ready_wait)
                session.ready_timer = loop.call_later(wait, not_ready, wait)

        def on_error(req_id: int, code: int, text: str, _contract: Any) -> None:
            if code == 326:
                fail(self._error(ClientIdInUse, f"Client id {self.client_id} is already in use on "
                                 f"{self.host}:{self.port} (error 326)"))
            else:
                self._on_gateway_error(req_id, code, text, _contract)

        def on_api_error(msg: str) -> None:
            session.last_socket_error = msg
            # ib_async reports its own connect failure (a timeout) here too: that is not the peer's doing.
            if ib.client.isReady() or fail_fast.done() or msg.startswith("API connection failed"):
                return
            if not session.watch.answered:
                # Closed or reset before the handshake: the Gateway's own refusal (trusted IPs,
                # "localhost only"); a Gateway that is merely starting does not accept at all.
                how = "reset" if "reset" in msg.lower() else "closed"
                fail(self._error(ConnectionRejected,
                    f"The Gateway at {self.host}:{self.port} {how} the connection before the API handshake: "
                    "it refuses this client (this machine not in its Trusted IPs, 'Allow connections from "
                    "localhost only' ticked, or ibkr.host is not the Gateway's machine)"))
                return
            # 326 arrives just before the close; give it a moment to win.
            loop.call_later(0.05, fail, self._error(GatewayClosedConnection,
                f"The Gateway at {self.host}:{self.port} closed the connection before the API was ready"))

        ib.client.conn.hasData += on_data
        ib.errorEvent += on_error
        ib.client.apiError += on_api_error
        # Before the handshake ib_async says nothing about a peer close (it waits out its
        # timeout), so listen to the socket itself.
        def on_socket_lost(msg: str) -> None:
            if not session.last_socket_error.startswith("API connection failed"):  # else we closed it
                on_api_error(msg or "Peer closed connection.")

        ib.client.conn.disconnected += on_socket_lost
        ib.disconnectedEvent += lambda: self._on_socket_closed(session)  # IB wires client.apiEnd to it

    def _not_ready_error(self, session: _Session, waited: float) -> ApiNotReady:
        return self._error(ApiNotReady,
            f"The Gateway answered the handshake (server version {session.watch.server_version}) but sent no "
            f"accounts / next order id within {waited:g} s: it is not logged in (still starting?) "
            "or a dialog is pending")

    def _raise_connect_error(self, session: _Session, connecting: asyncio.Future[Any]) -> None:
        """Turn ib_async's outcome into a typed error, or return when it connected."""
        exc = connecting.exception()
        if exc is None:
            return
        t = self.options.connect_timeout
        if isinstance(exc, TimeoutError):
            if not session.watch.answered:
                raise self._error(HandshakeTimeout, f"{self.host}:{self.port} accepts connections but did not "
                                  f"answer the API handshake within {t:g} s") from exc
            raise self._not_ready_error(session, t) from exc
        if isinstance(exc, ConnectionRefusedError):
            raise self._error(GatewayRefused, f"Connection refused on {self.host}:{self.port}") from exc
        raise self._error(GatewayClosedConnection, f"Connection to {self.host}:{self.port} failed: {exc}") from exc

    def _on_session_up(self) -> None:
        s = self._session
        assert s is not None
        self._state = ConnectionState.CONNECTED
        self._last_pong = time.monotonic()
        up = Connected(server_version=s.ib.client.serverVersion(), accounts=tuple(s.ib.managedAccounts()),
                       connection_time=s.watch.connection_time)
        self.log.info("connected to %s:%s as client %s, server version %s, accounts %s",
                      self.host, self.port, self.client_id, up.server_version, ",".join(up.accounts))
        self.events.emit(up)
        self._heartbeat_task = asyncio.create_task(self._heartbeat_loop(), name=f"heartbeat {self.host}:{self.port}")

    # -------------------------------------------------------------- notices
    def _on_gateway_error(self, req_id: int, code: int, text: str, _contract: Any) -> None:
        kind = notices.notice_kind(code, text) or NoticeKind.ERROR
        meaning = notices.explain(code, text)
        farm = notices.farm_name(code, text)
        if kind is NoticeKind.ERROR:
            # A request's error: reported as an event too, so a check can judge this client's
            # own errors without listening to the process's loggers.
            self.log.info("gateway error %s (req %s): %s", code, req_id, text)
        else:
            self.log.info("gateway notice %s", meaning)
        self.events.emit(GatewayNotice(code=code, message=text, notice=kind, farm=farm, meaning=meaning))

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
        self.log.warning("connection to %s:%s lost: %s (%s)", self.host, self.port, reason, detail or "no detail")
        self.events.emit(Disconnected(reason=reason, detail=detail))
        if self.options.reconnect is not None:
            self._state = ConnectionState.RECONNECTING
            self._reconnect_task = asyncio.create_task(self._reconnect(self.options.reconnect, dropped_at),
                                                       name="reconnect")

    async def _reconnect(self, policy: ReconnectPolicy, dropped_at: float) -> None:
        """Knock until the port accepts, then try the API; repeat until connected or the policy stops.

        An attempt is spent only when the Gateway accepted the connection and the API attempt
        failed for a reason other than "not ready yet": a refused port (Gateway restarting) and
        a Gateway still logging in cost nothing and are retried at once. ``policy.stop`` is asked
        after every try whatever its outcome and while knocking, so its time budget bounds the
        whole loop; ``policy.wait`` is the pause after a spent attempt.
        """
        opts = self.options
        outage = RetryCallState(None, None, (), {})  # type: ignore[arg-type]  # no Retrying: our loop
        outage.start_time, outage.attempt_number = dropped_at, 0
        tries = 0
        last_error = ""
        wait = 0.0  # before the next knock: the policy's wait after a spent attempt, else nothing
        # After a spent attempt the port is open throughout, so the full wait is waited unless the
        # port goes down and comes back meanwhile (a restart): a fast failure such as 326 must not
        # burn every attempt in a second.
        while await wait_for_port(self.host, self.port, opts.probe_interval, at_least=wait,
                                  give_up=lambda: _stops(policy, outage)) is not None:
            tries += 1
            wait = 0.0
            self.events.emit(Reconnecting(attempt=outage.attempt_number + 1, max_attempts=policy.max_attempts,
                                          delay=policy.wait(outage)))
            try:
                await self._open_session(self._retry_ready_wait())
            except (GatewayRefused, ConnectTimeout, HostUnresolvable):
                pass  # the port went away again between knock and connect: not an attempt
            except ApiNotReady as e:
                last_error = str(e)
                self.log.info("reconnect try %s: Gateway accepts but its API is not ready yet", tries)
                self.events.emit(ReconnectFailedAttempt(attempt=outage.attempt_number + 1, error=last_error,
                                                        gateway_starting=True))
            except Exception as e:  # a GatewayError, or a bug / library surprise: spent and said, never silent
                outage.attempt_number += 1
                last_error = str(e) if isinstance(e, GatewayError) else f"unexpected {type(e).__name__}: {e}"
                self.log.log(logging.INFO if isinstance(e, GatewayError) else logging.ERROR,
                             "reconnect attempt %s/%s failed: %s", outage.attempt_number, policy.max_attempts,
                             last_error, exc_info=not isinstance(e, GatewayError))
                self.events.emit(ReconnectFailedAttempt(attempt=outage.attempt_number, error=last_error))
                wait = policy.wait(outage)
            else:
                self._reconnect_task = None
                downtime = time.monotonic() - dropped_at
                self._on_session_up()
                self.log.info("reconnected to %s:%s after %.2f s, %s tr%s", self.host, self.port, downtime, tries,
                              "y" if tries == 1 else "ies")
                self.events.emit(Reconnected(downtime=downtime, attempts=outage.attempt_number + 1))
                return
            if _stops(policy, outage):
                break
        self._reconnect_task = None
        self._state = ConnectionState.DISCONNECTED
        downtime = time.monotonic() - dropped_at
        if not last_error:
            last_error = f"the Gateway's port stayed closed for {downtime:.0f} s (past ibkr.give_up_after)"
        self.log.error("gave up reconnecting to %s:%s after %s attempt(s), %.1f s: %s",
                       self.host, self.port, outage.attempt_number, downtime, last_error)
        self.events.emit(ReconnectGaveUp(attempts=outage.attempt_number, downtime=downtime, last_error=last_error))

    # ------------------------------------------------------------ heartbeat
    async def ping(self, timeout: float | None = None) -> float:
        """Round-trip time of one reqCurrentTime, in seconds. Pings never overlap."""
        async with self._ping_lock:
            s = self._session
            if not self._connected() or s is None:
                raise self._not_connected()
            wait = self._last_ping_sent + self.options.min_ping_spacing - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            limit = timeout if timeout is not None else self.options.heartbeat_timeout
            self._last_ping_sent = start = time.monotonic()
            try:
                await asyncio.wait_for(s.ib.reqCurrentTimeAsync(), limit)
            except TimeoutError as e:
                self.events.emit(Heartbeat(rtt=None))
                raise self._error(PingTimeout, f"The Gateway did not answer a heartbeat within {limit:g} s") from e
            except ConnectionError as e:
                raise self._not_connected() from e
            rtt = time.monotonic() - start
            self._last_pong = time.monotonic()
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
                return  # the drop, or our own disconnect, is announced where it happened
            except Exception as e:
                # Anything else would leave the link unwatched with nobody told: a drop, so the
                # owner hears of it and reconnecting (if any) starts from a fresh session.
                self.log.exception("heartbeat failed on %s:%s", self.host, self.port)
                self._drop(DisconnectReason.OTHER, f"heartbeat failed: {type(e).__name__}: {e}")
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
        """Graceful, local disconnect: cancels heartbeat and any reconnect, emits Disconnected(LOCAL).
        A connect() still on its way then raises NotConnected and leaves nothing connected."""
        self._disconnects += 1
        await self._cancel_reconnect()
        self._stop_heartbeat()
        session, self._session = self._session, None
        was_connected = self._state is ConnectionState.CONNECTED
        self._state = ConnectionState.DISCONNECTED
        if session is None:
            return
        session.ib.disconnect()
        self.log.info("disconnected from %s:%s", self.host, self.port)
        if was_connected:
            self.events.emit(Disconnected(reason=DisconnectReason.LOCAL))
