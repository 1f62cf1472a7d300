"""A client for IBC's command server (IbcAlpha/IBC, ``CommandServerPort`` in IBC's config.ini).

One command per connection: one line out, IBC's reply lines in (``OK <text>``, ``ERROR <text>``,
``INFO <text>`` when not suppressed). Every failure is an ``IbcError`` whose message is one line
naming the address and what to do: nothing listening, a refusal (IBC closes connections from
addresses not in ``ControlFrom`` without a word), a silent peer, a peer that is not IBC, an ERROR.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
MAX_LINE = 4096  # IBC's replies are short; a longer line is someone else's
REPLY = re.compile(r"(OK|ERROR|INFO)(?: (.*))?")
# The minute a Gateway restarts at: IBC 3.24 says "OK RESTART at 10:04 AM" (after "OK RESTART in
# progress"); 3.23 and earlier said "OK Restarting at 10:04 AM" alone. TWS restarts at once.
RESTART_AT = re.compile(r"(?:RESTART at|Restarting at) (\d{1,2}):(\d{2}) ?([AaPp])\.? ?[Mm]\.?")
WORD = re.compile(r"[A-Z]{1,32}")
HINT_PORT = "check ibc.port (CommandServerPort in IBC's config.ini, 7462 by convention)"


class IbcError(Exception):
    """Something kept a command from IBC: one line naming the address, the cause and what to do."""

    def __init__(self, address: str, message: str) -> None:
        super().__init__(f"IBC at {address}: {message}")
        self.address = address


class IbcUnreachable(IbcError):
    """Nothing listens there, or the host cannot be reached."""


class IbcRefused(IbcError):
    """The connection was closed without a word: not in IBC's ControlFrom, or not IBC's port."""


class IbcTimeout(IbcError):
    """Connected, but no reply came in time."""


class IbcNotIbc(IbcError):
    """The peer answered something IBC never says (a web server, the Gateway's API port ...)."""


class IbcCommandError(IbcError):
    """IBC answered ERROR; ``reply`` is its text (``RESTART already in progress``)."""

    def __init__(self, address: str, command: str, reply: str) -> None:
        super().__init__(address, f"{command} refused: ERROR {reply}")
        self.command, self.reply = command, reply


class IbcRestartMissed(IbcError):
    """IBC accepted RESTART but the Gateway never went down: for whoever watches the restart."""

    def __init__(self, address: str, accepted: RestartAccepted, waited: float) -> None:
        when = f" at {accepted.at:%H:%M}" if accepted.at is not None else ""
        super().__init__(address, f"accepted RESTART{when} but the Gateway never went down within {waited:g} s; "
                                  "look at IBC's log and the Gateway's auto-restart setting")
        self.accepted, self.waited = accepted, waited


@dataclass(frozen=True)
class RestartAccepted:
    """IBC took RESTART. ``at``: the minute a Gateway restarts at, on the Gateway host's clock (a 24-hour
    time); None when it restarts at once (TWS). ``replies``: IBC's lines as they came."""

    at: time | None
    replies: tuple[str, ...]

    def due(self, now: datetime) -> datetime:
        """When the restart falls, as a moment in ``now``'s zone (the Gateway host's): ``at``'s next
        occurrence, counting one that began less than a minute ago; ``now`` when it restarts at once."""
        if self.at is None:
            return now
        due = now.replace(hour=self.at.hour, minute=self.at.minute, second=0, microsecond=0)
        return due + timedelta(days=1) if due <= now - timedelta(minutes=1) else due


def _restart_time(text: str) -> time | None:
    found = RESTART_AT.fullmatch(text)
    if found is None:
        return None
    hour, minute, half = int(found[1]), int(found[2]), found[3].upper()
    if not (1 <= hour <= 12 and minute < 60):
        return None
    return time(hour % 12 + (12 if half == "P" else 0), minute)


class IbcClient:
    """Talks to one IBC command server; each call is one connection, one command."""

    def __init__(self, host: str, port: int, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.host, self.port, self.timeout = host, port, timeout

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def restart(self) -> RestartAccepted:
        """RESTART: a Gateway restarts at the minute IBC names, keeping its session (no 2FA)."""
        replies = await self._exchange("RESTART", until=lambda text: _restart_time(text) is not None)
        return RestartAccepted(next(filter(None, map(_restart_time, replies)), None), tuple(replies))

    async def stop(self) -> str:
        """STOP: IBC closes the Gateway (a new start needs a login, with 2FA on a live account)."""
        return (await self._exchange("STOP"))[0]

    async def reconnect_data(self) -> None:
        """RECONNECTDATA (Ctrl-Alt-F): the Gateway reconnects its data farms."""
        await self._exchange("RECONNECTDATA")

    async def reconnect_account(self) -> None:
        """RECONNECTACCOUNT (Ctrl-Alt-R): the Gateway reconnects to IB's login server."""
        await self._exchange("RECONNECTACCOUNT")

    async def command(self, word: str) -> str:
        """Any one-word command; the text of IBC's first OK reply."""
        return (await self._exchange(word))[0]

    async def _exchange(self, command: str, until: Callable[[str], bool] | None = None) -> list[str]:
        """Send ``command``; the texts of IBC's OK lines: the first one, or with ``until`` every one up
        to the line it accepts or IBC's hang-up (after RESTART IBC says two lines, then closes)."""
        if not WORD.fullmatch(command):
            raise ValueError(f"not an IBC command word: {command[:40]!r}")
        oks: list[str] = []
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await self._connect()
                writer.write(command.encode() + b"\n")
                await writer.drain()
                while True:
                    line = await self._line(reader, command, answered=bool(oks))
                    if line is None:  # IBC hung up after its reply
                        return oks
                    kind, text = line
                    if kind == "ERROR":
                        raise IbcCommandError(self.address, command, text)
                    if kind == "OK":
                        oks.append(text)
                        if until is None or until(text):
                            return oks
        except TimeoutError:
            if oks:  # accepted; what else IBC had to say did not come
                return oks
            raise IbcTimeout(self.address, f"no reply to {command} within {self.timeout:g} s: IBC is hung, or "
                                           f"something that is not IBC listens there; {HINT_PORT}") from None
        except ConnectionError:  # reset: a refusal with our command still unread
            if oks:
                return oks
            raise self._refused() from None
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.open_connection(self.host, self.port, limit=MAX_LINE)
        except TimeoutError:
            raise IbcUnreachable(self.address, f"no connection within {self.timeout:g} s; check ibc.host and "
                                               "the firewall between gwbot and IBC") from None
        except ConnectionRefusedError:
            raise IbcUnreachable(self.address, "nothing listens there (connection refused); start IBC with "
                                               f"CommandServerPort={self.port} in its config.ini, or {HINT_PORT}"
                                 ) from None
        except OSError as e:  # a name that does not resolve, no route
            reason = str(e.strerror or e).rsplit(": ", 1)[-1]
            raise IbcUnreachable(self.address, f"cannot connect ({reason}); check ibc.host") from None

    async def _line(self, reader: asyncio.StreamReader, command: str, answered: bool) -> tuple[str, str] | None:
        """IBC's next reply line as (kind, text), INFO lines skipped; None at a hang-up after a reply."""
        while True:
            try:
                raw = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as e:
                if e.partial.strip():
                    raise self._not_ibc(command, e.partial) from None
                if answered:
                    return None
                raise self._refused() from None
            except asyncio.LimitOverrunError:
                raise self._not_ibc(command, await reader.read(80)) from None
            found = REPLY.fullmatch(raw.decode(errors="replace").rstrip("\r\n"))
            if found is None:
                raise self._not_ibc(command, raw)
            if found[1] != "INFO":
                return found[1], found[2] or ""

    def _refused(self) -> IbcRefused:
        return IbcRefused(self.address, "closed the connection without a word: add gwbot's address to ControlFrom "
                                        f"in IBC's config.ini, or {HINT_PORT} (the Gateway's API port does this too)")

    def _not_ibc(self, command: str, said: bytes) -> IbcNotIbc:
        shown = said.decode(errors="replace").strip()[:60]
        return IbcNotIbc(self.address, f"answered {command} with {shown!a}, which IBC never says: not IBC's "
                                       f"command server; {HINT_PORT}")
