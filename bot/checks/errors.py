"""Step 5: connection error handling, as a matrix of local endpoints that fail in known ways.

Each row builds its own misbehaving endpoint on loopback (or uses the target for 326), connects
with a fresh client, and expects one typed error within a bound, leaving no task or socket behind.
Only what the row's own code created counts: the tasks and connections made in its context (the
bot's polling, another person's /status or a second check run alongside and are none of its business).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from bot.checks.base import Check, CheckContext, CheckRecord, Recorder, RunRecord
from bot.client_ids import ClientRole
from bot.ibkr.client import ClientOptions, IBKRClient
from bot.ibkr.errors import (
    ApiNotReady,
    ClientIdInUse,
    GatewayError,
    GatewayRefused,
    HandshakeTimeout,
    HostUnresolvable,
    NotAnApiPort,
)

# Rows that must wait for a timeout use this short one, so the matrix stays quick.
ROW_TIMEOUT = 2.0
# Time a row's closing sockets and tasks get to finish before they count as leaked.
LEAK_GRACE = 0.5
UNRESOLVABLE_HOST = "gateway.invalid"  # RFC 6761: .invalid never resolves
NOT_LOGGED_IN_VERSION = 178  # a server version ib_async speaks
# What a misbehaving endpoint sends a new connection (it may read first); then it reads until closed.
Answer = Callable[[asyncio.StreamReader], Awaitable[bytes]]


Endpoint = tuple[str, int]  # host, port
EndpointFactory = Callable[[CheckContext], contextlib.AbstractAsyncContextManager[Endpoint]]


@dataclass(frozen=True)
class Row:
    name: str
    expected: type[GatewayError]
    bound: float  # seconds the error may take
    endpoint: EndpointFactory


def _problem(row: Row, got: str, message: str, elapsed: float, tasks: int, sockets: int) -> str | None:
    """Why a row went wrong (the error, its time, or what it left behind); None when it behaved."""
    if got != row.expected.__name__:
        return f"{row.name}: expected {row.expected.__name__}, got {got}: {message}"
    if elapsed > row.bound:
        return f"{row.name}: took {elapsed:.2f} s, bound {row.bound:g} s"
    if tasks or sockets:
        return f"{row.name}: leaked {tasks} task(s) and {sockets} socket(s)"
    return None


async def _silent(_: asyncio.StreamReader) -> bytes:
    """Accepts and never answers: a hung process, or a port some other program holds open."""
    return b""


async def _garbage(_: asyncio.StreamReader) -> bytes:
    return b"SSH-2.0-OpenSSH_9.6\r\n"  # e.g. the port forwards to the wrong service


async def _http(reader: asyncio.StreamReader) -> bytes:
    await reader.read(1)
    return b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


async def _not_logged_in(reader: asyncio.StreamReader) -> bytes:
    """A Gateway still at its login screen: it answers the handshake (server version, time), then
    never the API start, so no next valid id and no accounts ever come."""
    await reader.readexactly(4)  # "API\0"
    (size,) = struct.unpack(">I", await reader.readexactly(4))
    await reader.readexactly(size)  # the client's version range; any is fine
    payload = f"{NOT_LOGGED_IN_VERSION}\0{datetime.now(UTC):%Y%m%d %H:%M:%S} UTC\0".encode()
    return struct.pack(">I", len(payload)) + payload


def _served(answer: Answer) -> EndpointFactory:
    """A loopback server that answers every connection so."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, struct.error):
            writer.write(await answer(reader))
            await writer.drain()
            await reader.read()
        writer.close()

    @contextlib.asynccontextmanager
    async def endpoint(_: CheckContext) -> AsyncIterator[Endpoint]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        try:
            yield "127.0.0.1", server.sockets[0].getsockname()[1]
        finally:
            server.close()
            server.close_clients() if hasattr(server, "close_clients") else None
            await server.wait_closed()
    return endpoint


@contextlib.asynccontextmanager
async def _nothing_listening(ctx: CheckContext) -> AsyncIterator[Endpoint]:
    async with _served(_silent)(ctx) as endpoint:
        pass  # a port that was free a moment ago, and is again
    yield endpoint


@dataclass
class CaseEvidence:
    """What one row's code created: its tasks and its connections, nothing else in the process."""

    tasks: set[asyncio.Future[Any]] = field(default_factory=set)
    transports: list[asyncio.BaseTransport] = field(default_factory=list)

    async def leftovers(self, grace: float) -> tuple[int, int]:
        """Tasks still running and sockets still open after ``grace`` (closing takes a loop turn or two)."""
        deadline = time.monotonic() + grace
        while self._running() or self._open():
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.02)
        return len(self._running()), len(self._open())

    def _running(self) -> list[asyncio.Future[Any]]:
        return [t for t in self.tasks if not t.done() and t is not asyncio.current_task()]

    def _open(self) -> list[asyncio.BaseTransport]:
        def closed(t: asyncio.BaseTransport) -> bool:
            sock = t.get_extra_info("socket")
            return t.is_closing() and (sock is None or sock.fileno() == -1)
        return [t for t in self.transports if not closed(t)]


# The row whose code is running in this context, if any (tasks inherit it from their creator).
_CASE: ContextVar[CaseEvidence | None] = ContextVar("gwbot_errors_case", default=None)


_T = TypeVar("_T")


class _LoopHooks:
    """On the loop while any row runs: hands each new task and connection to the row whose context
    made it. Installed once however many rows run at a time; removed when the last one ends."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.users = 0
        self.previous_factory = loop.get_task_factory()
        self.own_create_connection = loop.__dict__.get("create_connection")
        self.create_connection = loop.create_connection

    def __call__(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, _T] | Generator[Any, None, _T],
                 /, **kwargs: Any) -> asyncio.Future[_T]:
        factory = self.previous_factory
        task = factory(loop, coro, **kwargs) if factory else asyncio.Task(coro, loop=loop, **kwargs)
        case = _CASE.get()
        if case is not None:
            case.tasks.add(task)
        return task

    async def tracked_connection(self, *args: Any, **kwargs: Any) -> tuple[asyncio.BaseTransport, Any]:
        transport, protocol = await self.create_connection(*args, **kwargs)
        case = _CASE.get()
        if case is not None:
            case.transports.append(transport)
        return transport, protocol

    def install(self) -> None:
        self.loop.set_task_factory(self)
        # Deliberate monkeypatch of this loop only; typeshed's overloads cannot describe a pass-through.
        self.loop.create_connection = self.tracked_connection  # type: ignore[method-assign, assignment]

    def uninstall(self) -> None:
        if self.loop.get_task_factory() is self:
            self.loop.set_task_factory(self.previous_factory)
        if self.own_create_connection is not None:
            self.loop.create_connection = self.own_create_connection  # type: ignore[method-assign]
        else:
            self.loop.__dict__.pop("create_connection", None)


@contextlib.contextmanager
def case_evidence() -> Iterator[CaseEvidence]:
    """Collect the tasks and connections the code in this block (and the tasks it starts) creates."""
    loop = asyncio.get_running_loop()
    current = loop.get_task_factory()
    hooks = current if isinstance(current, _LoopHooks) else _LoopHooks(loop)
    if hooks is not current:
        hooks.install()
    hooks.users += 1
    evidence = CaseEvidence()
    token = _CASE.set(evidence)
    try:
        yield evidence
    finally:
        _CASE.reset(token)
        hooks.users -= 1
        if hooks.users == 0:
            hooks.uninstall()


@contextlib.asynccontextmanager
async def _unresolvable(ctx: CheckContext) -> AsyncIterator[Endpoint]:
    yield UNRESOLVABLE_HOST, ctx.gateway.port


@contextlib.asynccontextmanager
async def _id_taken_on_target(ctx: CheckContext) -> AsyncIterator[Endpoint]:
    """The target Gateway, with a client already holding the id the row will try."""
    gw = ctx.gateway
    holder = IBKRClient.from_config(gw, ClientRole.ERRORS_MATRIX, reconnect=None)
    await holder.connect()
    try:
        yield gw.host, gw.port
    finally:
        await holder.disconnect()


ROWS = (
    Row("refused port", GatewayRefused, 1.0, _nothing_listening),
    Row("accepts, never answers", HandshakeTimeout, ROW_TIMEOUT + 1.0, _served(_silent)),
    Row("non-API service (garbage)", NotAnApiPort, 1.0, _served(_garbage)),
    Row("non-API service (HTTP)", NotAnApiPort, 1.0, _served(_http)),
    Row("Gateway not ready (not logged in)", ApiNotReady, ROW_TIMEOUT + 1.0, _served(_not_logged_in)),
    Row("unresolvable host", HostUnresolvable, 5.0, _unresolvable),
    Row("client id already in use", ClientIdInUse, 1.0, _id_taken_on_target),
)


ROWS_OK, ROWS_RUN = "rows_ok", "rows"  # metric names (counts); each row's seconds: row_<n>_seconds


class ErrorsCheck(Check):
    name = "errors"
    section = "Error Handling Test"
    provokes_errors = True
    key_figures = (ROWS_OK, "{rows_ok:.0f}/{rows:.0f} error cases handled as expected")

    def __init__(self, rows: tuple[Row, ...] = ROWS) -> None:
        self.rows = rows

    @classmethod
    def report_lines(cls, run: RunRecord, check: CheckRecord | None) -> list[str]:
        return [] if check is None else [f"- {f}" for f in check.findings]  # one finding per row

    async def execute(self, ctx: CheckContext, rec: Recorder) -> None:
        # An id the squad's own programs are unlikely to use, so the matrix disturbs nobody; the
        # 326 row takes the one its endpoint's holder already uses.
        probe_id = ctx.gateway.client_id_for(ClientRole.ERRORS_MATRIX)
        rows_ok = 0
        for i, row in enumerate(self.rows):
            rec.progress(f"Row {i + 1}/{len(self.rows)}: {row.name}", fraction=i / len(self.rows))
            async with row.endpoint(ctx) as (host, port):
                with case_evidence() as evidence:
                    client_id = probe_id if row.expected is ClientIdInUse else probe_id + 1
                    got, message, elapsed = await self.attempt(host, port, client_id)
                    problem = _problem(row, got, message, elapsed, *await evidence.leftovers(LEAK_GRACE))
            rows_ok += problem is None
            rec.note(f"{'ok' if problem is None else 'WRONG'}: {row.name}: {got} in {elapsed:.2f} s "
                     f"(expected {row.expected.__name__} within {row.bound:g} s) - {message}")
            rec.metric(f"row_{i + 1}_seconds", elapsed, "s")
            if problem is not None:
                rec.fail(problem)
        rec.metric(ROWS_OK, float(rows_ok), "")
        rec.metric(ROWS_RUN, float(len(self.rows)), "")

    @staticmethod
    async def attempt(host: str, port: int, client_id: int) -> tuple[str, str, float]:
        """Connect a fresh client, then disconnect it: the error's class name and text, and the time."""
        client = IBKRClient(host, port, client_id, ClientOptions(reconnect=None, connect_timeout=ROW_TIMEOUT))
        start = time.monotonic()
        got, message = "connected", "the connection succeeded"
        try:
            await client.connect()
        except GatewayError as e:
            got, message = type(e).__name__, str(e)
        finally:
            elapsed = time.monotonic() - start
            await client.disconnect()
        return got, message, elapsed
