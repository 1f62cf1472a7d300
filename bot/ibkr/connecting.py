"""Reaching a Gateway's API port and reading its first answer: knocks and the handshake watch.

The layers below the API session: whether anything listens (every resolved address, as
asyncio's own connect tries them), waiting for a restarting Gateway's port to open, and telling
"no answer" from "answered" from "not the TWS API" in the first bytes it sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.ibkr.errors import ConnectTimeout, GatewayError, GatewayRefused, HostUnresolvable

# A TWS API frame is a few hundred bytes; a "length" beyond this means we are not talking to one.
MAX_SANE_FRAME = 1 << 20
# The accounts come one round trip after the handshake's answer, plus the Gateway's own time:
# waiting two handshake round trips leaves a slow link as much again to spare.
READY_ROUND_TRIPS = 2.0


@dataclass
class HandshakeWatch:
    """Reads the first bytes the Gateway sends, to tell "no answer" from "answered" from "garbage",
    and times the answer: the link's round trip, known before any wait for a login."""

    buf: bytes = b""
    server_version: int | None = None
    connection_time: str = ""
    garbage: bool = False
    started: float = field(default_factory=time.monotonic)
    round_trip: float = 0.0  # connect + handshake, once answered

    @property
    def answered(self) -> bool:
        return self.server_version is not None

    def ready_wait(self, least: float) -> float:
        """How long to wait for accounts / next id after the answer: ``least`` on a fast link,
        longer on one whose round trip alone would use it up (a slow session is not a stuck one)."""
        return max(least, READY_ROUND_TRIPS * self.round_trip)

    def feed(self, data: bytes) -> None:
        if self.answered or self.garbage:
            return
        self.buf += data
        if len(self.buf) < 4:
            return
        (size,) = struct.unpack(">I", self.buf[:4])
        if size == 0 or size > MAX_SANE_FRAME:
            self.garbage = True
            return
        if len(self.buf) < 4 + size:
            return
        fields = self.buf[4 : 4 + size].split(b"\0")
        if len(fields) >= 2 and fields[0].isdigit():
            self.server_version = int(fields[0])
            self.round_trip = time.monotonic() - self.started
            self.connection_time = fields[1].decode(errors="replace")
        else:
            self.garbage = True


async def probe_port(host: str, port: int, timeout: float) -> tuple[Any, ...]:
    """Open and close a TCP connection, trying every resolved address (IPv6 and IPv4) in order,
    as asyncio's own connect does; return the address that accepted, or raise the typed error
    for why none did (the first address's reason when they all failed)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise HostUnresolvable(f"Cannot resolve host '{host}': {e.strerror}", host=host, port=port) from e
    first: GatewayError | None = None
    for family, _, _, _, addr in infos:
        try:
            await _knock(family, addr, host, port, timeout)
        except GatewayError as e:
            first = first or e
            continue
        return addr
    assert first is not None  # getaddrinfo never returns an empty list without raising
    raise first


async def _knock(family: int, addr: tuple[Any, ...], host: str, port: int, timeout: float) -> None:
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


async def wait_for_port(host: str, port: int, interval: float, *, at_least: float = 0.0, after_down: bool = False,
                        give_up: Callable[[], bool] = lambda: False) -> float | None:
    """Knock every ``interval`` s until the port accepts; return when it did (time.monotonic()).

    It counts at once unless ``after_down`` (then only once it has been seen closed) or ``at_least``
    (then only after that many seconds, or once it went down and came back meanwhile: a restart).
    None when ``give_up()`` says so first.
    """
    until = time.monotonic() + at_least
    seen_down = False
    while True:
        up = await port_accepts(host, port, timeout=max(interval * 4, 1.0))
        now = time.monotonic()
        if up and (seen_down or (now >= until and not after_down)):
            return now
        seen_down = seen_down or not up
        if give_up():
            return None
        await asyncio.sleep(min(interval, until - now) if up and now < until else interval)


async def handshake_answered(host: str, port: int, timeout: float, versions: bytes) -> bool:
    """Whether the port answers the API handshake (``versions``: ``b"v157..178"``) within ``timeout``:
    the layer between "port open" and "API ready", without starting an API session."""
    writer: asyncio.StreamWriter | None = None
    watch = HandshakeWatch()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"API\0" + struct.pack(">I", len(versions)) + versions)
            await writer.drain()
            while not (watch.answered or watch.garbage):
                data = await reader.read(4096)
                if not data:
                    return False
                watch.feed(data)
    except (TimeoutError, OSError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return watch.answered
