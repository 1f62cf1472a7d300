"""The simulated Gateway's control: one command per text line, OK or ERROR lines back.

It is IBC's command server too (bot/lab/ibc_sim.py): a bare IBC word (STOP, RESTART, RECONNECTDATA ...)
gets IBC's exact reply and effect, an unknown word IBC's ``ERROR Command invalid``; the simulator's own
fault commands take their arguments beside them (``restart 40 --ready-after 15``, ``stop --rst``).
`gwbot simctl stop` and the `!` lines of `gwbot chat` talk to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import socket
from collections.abc import Awaitable, Callable, Sequence

from bot.config import Range
from bot.lab import ibc_sim
from bot.lab.ibc_sim import INVALID, Reply
from bot.lab.simulator import Reject, SimulatedGateway
from bot.lab.wire import CONNECT_NOTICES, DEFAULT_ACCOUNTS, START_API

log = logging.getLogger(__name__)

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
CONTROL_HELP = (" | ".join(cmd + usage.split("  (")[0][len(cmd):] for cmd, (usage, _, _) in COMMANDS.items())
                + "; IBC's, bare: " + " | ".join(ibc_sim.WORDS))
MAX_SECONDS = 86_400.0
MAX_LINE = 4096  # bytes: the longest command (a notice with its own text) is far shorter
NO_CONTROL_PORT = "ERROR no simulated Gateway control port"
ANSWER = re.compile(r"(OK|ERROR)( |$)")  # how every answer of the control port starts


class BadCommand(ValueError):
    """A control command with bad arguments: the message says what is expected."""


def _seconds(word: str, what: str, *, low: float = 0.0, high: float = MAX_SECONDS) -> float:
    try:  # the same number rule as every other edge: plain ASCII decimals ('١', '1_0' and 'nan' are not)
        return float(Range(low, high).parse(word))
    except ValueError:
        raise BadCommand(f"{what} must be a number of seconds from {low:g} to {high:g}, not {word[:40]!r}") from None


def _integer(word: str, what: str, low: int, high: int) -> int:
    try:
        return int(Range(low, high, integer=True).parse(word))
    except ValueError:
        raise BadCommand(f"{what} must be a whole number from {low} to {high}, not {word[:40]!r}") from None


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
        return INVALID  # IBC's word for it: the port is IBC's command server too
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
            msg_ids = _msg_ids(word)
            if len(msg_ids) != 1:
                raise BadCommand(f"one MSGID at a time, not {word[:40]!r}; usage: {usage}")
            msg_id = msg_ids[0]
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


def for_people(text: str) -> str:
    """An answer for a person typing commands: IBC's bare ``Command invalid`` gets the list of commands."""
    return f"{text}; commands: {CONTROL_HELP}" if text == INVALID else text


async def control(gateway: SimulatedGateway, line: str) -> str:
    """Carry out one control command; the answer lines start with OK or ERROR, like IBC's.

    A bad argument answers ``ERROR <what is expected>`` and changes nothing.
    """
    if not line.strip():
        return f"ERROR empty command; commands: {CONTROL_HELP}"
    return "\n".join((await answer(gateway, line)).lines)


async def answer(gateway: SimulatedGateway, line: str) -> Reply:
    """One non-empty line: a bare IBC word is IBC's, anything else the simulator's own command."""
    cmd, *args = line.split()
    cmd = cmd.upper()
    word = line.strip(" \t\r\n")  # IBC compares the whole line: "RESTART\u00a0" is not its RESTART
    try:
        if word.upper() in ibc_sim.WORDS:
            return await gateway.ibc.command(word)
        return Reply((await _run(gateway, cmd, args),))
    except BadCommand as e:
        return Reply((f"ERROR {cmd.lower()}: {e}",))
    except OSError as e:  # start / restart: the port is taken meanwhile, say
        return Reply((f"ERROR {cmd.lower()}: {e}",))
    except Exception as e:  # a bug: the control port must answer anyway, and keep serving
        log.exception("control command %r failed", line[:200])
        return Reply((f"ERROR {cmd.lower()}: the simulator failed ({type(e).__name__}: {str(e)[:100]}); see its log",))


class ControlServer:
    """Text lines in, answer lines out, as IBC's command server: `gwbot simctl stop` talks to it."""

    def __init__(self, gateway: SimulatedGateway, port: int = 7462) -> None:
        self.gateway = gateway
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        # Loopback only: whoever reaches it can stop the Gateway.
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True,
                                                  limit=MAX_LINE)
        self.port = self._server.sockets[0].getsockname()[1]
        log.debug("control port listening on 127.0.0.1:%s", self.port)  # `gwbot simulate` says it on stdout

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = (await reader.readline()).decode(errors="replace")
                except ValueError:  # over the reader's limit: what follows is that line's tail, not a command
                    writer.write(f"ERROR line longer than {MAX_LINE} bytes; one short command per line\n".encode())
                    await writer.drain()
                    return
                if not line:
                    return
                if not line.strip():  # IBC reads on without a reply (it would write its prompt, empty by default)
                    continue
                reply = await answer(self.gateway, line)
                log.info("control: %s -> %s", line.strip()[:200], " | ".join(reply.lines))
                writer.write("".join(f"{text}\n" for text in reply.lines).encode())
                await writer.drain()
                if reply.close:  # as IBC does after EXIT, STOP and RESTART
                    return
        except ConnectionError:
            pass
        finally:
            writer.close()


async def send_control(host: str, port: int, command: str, timeout: float = 5.0) -> str:
    """Send one command to a ControlServer and return its answer (two lines for IBC's RESTART and PAUSE);
    whatever else is there (nothing, a silent peer, a web server) is one ``NO_CONTROL_PORT`` line naming
    the address."""
    if not command.strip():  # IBC's way is to answer nothing at all: do not wait for it
        return f"ERROR empty command; commands: {CONTROL_HELP}"
    where = f"{NO_CONTROL_PORT} at {host}:{port}"
    lines = 2 if command.strip().upper() in ("RESTART", "PAUSE") else 1  # "in progress", then "at hh:mm"
    writer: asyncio.StreamWriter | None = None
    data = b""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(command.strip().encode() + b"\n")
            await writer.drain()
            # Until EOF too: an ERROR for RESTART is one line, then IBC hangs up.
            while data.count(b"\n") < lines and len(data) < MAX_LINE and (chunk := await reader.read(MAX_LINE)):
                data += chunk
    except TimeoutError:
        return f"{where}: no answer within {timeout:g} s"
    except OSError as e:
        return f"{where} ({e.strerror or e})"
    finally:
        if writer is not None:  # on every path, a timeout included: no socket left behind
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    said = [text.strip() for text in data.decode(errors="replace").split("\n")[:lines] if text.strip()]
    if not said:
        return f"{where}: it hung up without answering"
    if not all(ANSWER.match(text) for text in said):
        return f"{where}: it answered {said[0][:40]!a}, which the simulator never says"
    return "\n".join(said)


class CannotListen(Exception):
    """A port `serve` cannot listen on; the message is one line naming it, the reason and the flag to change."""


async def _listen(start: Awaitable[None], host: str, port: int, flag: str) -> None:
    try:
        await start
    except OSError as e:  # asyncio's bind error repeats the address before the reason: keep the reason
        reason = str(e.strerror or e).rsplit(": ", 1)[-1]
        flag = "--host" if isinstance(e, socket.gaierror) else flag  # a name that does not resolve
        raise CannotListen(f"cannot listen on {host}:{port}: {reason}; pick another {flag}") from None


async def serve(host: str, port: int, accounts: Sequence[str] = DEFAULT_ACCOUNTS, control_port: int = 7462,
                *, until: asyncio.Event, listening: Callable[[], None] = lambda: None,
                ibc: ibc_sim.IbcProfile | None = None) -> None:
    """Run a simulated Gateway (and its control port) until ``until`` is set or the task is cancelled.

    ``listening`` is called once both ports are bound; a port that cannot be raises CannotListen.
    """
    gateway = SimulatedGateway(host, port, accounts)
    gateway.ibc.profile = ibc or ibc_sim.IbcProfile()
    ctl = ControlServer(gateway, control_port)
    try:
        # The control port first: it starts without a word, so a port that fails leaves one line, its error.
        if control_port:  # 0: no control port
            await _listen(ctl.start(), "127.0.0.1", control_port, "--control-port")
        await _listen(gateway.start(), host, port, "--port")
        listening()
        await until.wait()
    finally:
        await ctl.stop()
        await gateway.close()
