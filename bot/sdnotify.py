"""systemd's service notifications (sd_notify(3)): READY=1 once gwbot is up, WATCHDOG=1 while it is
healthy, STOPPING=1 as it stops; nothing at all when systemd did not ask (no ``$NOTIFY_SOCKET``).

The protocol is a few lines: newline-separated VAR=VALUE assignments in one datagram to the
AF_UNIX socket named by ``$NOTIFY_SOCKET`` ('@' at its start means the abstract namespace). It is
spoken here on a non-blocking socket, so a full socket buffer never stalls the loop; the Python
packages for it send with blocking calls (sdnotify, systemd-watchdog) or need libsystemd's
headers to build (systemd-python).

Healthy is what the dead man's switch calls healthy (bot.selfcheck.unhealthy): the loop runs on
time and no message has waited longer than ``stuck_after``. Without WATCHDOG=1 systemd kills
gwbot after ``WatchdogSec=`` and, with ``Restart=on-failure``, starts it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Mapping

from bot.outbox import Outbox
from bot.selfcheck import unhealthy

log = logging.getLogger(__name__)


class Notifier:
    """One datagram socket towards systemd's notification socket."""

    def __init__(self, address: str) -> None:
        # '@' stands for the leading NUL byte of an abstract socket's name (sd_notify(3)).
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Notifier | None:
        """The notifier systemd asked for, or None: not under systemd, or an address this does not speak."""
        address = env.get("NOTIFY_SOCKET", "")
        if not address:
            return None
        if not address.startswith(("/", "@")):  # e.g. vsock:CID:PORT, for VMs
            log.warning("NOTIFY_SOCKET=%s is not an AF_UNIX socket: no notifications to systemd", address)
            return None
        return cls(address)

    async def send(self, *assignments: str) -> bool:
        """Send VAR=VALUE lines in one datagram; False (logged) when systemd cannot be told."""
        try:
            await asyncio.get_running_loop().sock_sendto(self._sock, "\n".join(assignments).encode(), self.address)
        except OSError as e:
            log.warning("systemd notification %s not sent: %s", ",".join(assignments), e)
            return False
        return True

    def close(self) -> None:
        self._sock.close()


def watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds between WATCHDOG=1 (half of WatchdogSec=, as sd_watchdog_enabled(3) advises), or None."""
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):  # the watchdog is meant for another process (e.g. our parent)
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


async def _feed_watchdog(notifier: Notifier, outbox: Outbox, every: float, stuck_after: float) -> None:
    """WATCHDOG=1 every ``every`` seconds while gwbot is healthy; until cancelled."""
    due, quiet = time.monotonic(), False
    while True:
        why = await unhealthy(outbox, late=time.monotonic() - due, late_limit=every, stuck_after=stuck_after)
        if why:
            if not quiet:  # one line per unhealthy streak
                log.warning("systemd watchdog: not notifying: %s", why)
            quiet = True
        else:
            if quiet:
                log.info("systemd watchdog: healthy again, notifying")
            quiet = False
            await notifier.send("WATCHDOG=1")
        due = time.monotonic() + every
        await asyncio.sleep(every)  # woken late when something blocks the loop: that is measured


@contextlib.asynccontextmanager
async def notifying_systemd(outbox: Outbox, stuck_after: float,
                            env: Mapping[str, str] | None = None) -> AsyncIterator[None]:
    """The last start-up step: READY=1 on entry, the watchdog while inside, STOPPING=1 on exit."""
    env = os.environ if env is None else env
    notifier = Notifier.from_env(env)
    if notifier is None:
        yield
        return
    try:
        every = watchdog_interval(env)
        watchdog = None if every is None else asyncio.create_task(
            _feed_watchdog(notifier, outbox, every, stuck_after), name="systemd watchdog")
        await notifier.send("READY=1", "STATUS=running")
        log.info("systemd notified: ready%s", "" if every is None else f"; watchdog every {every:g} s while healthy")
        try:
            yield
        finally:
            if watchdog is not None:  # no WATCHDOG=1 after STOPPING=1
                watchdog.cancel()
                await asyncio.gather(watchdog, return_exceptions=True)
            await notifier.send("STOPPING=1", "STATUS=stopping")
    finally:
        notifier.close()
