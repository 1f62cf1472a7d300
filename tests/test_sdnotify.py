"""systemd's notifications from a running `gwbot run`: a datagram socket the test holds stands in
for systemd's ($NOTIFY_SOCKET), as sd_notify(3) describes it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

from bot.lab.simulator import SimulatedGateway
from bot.lab.telegram_standin import BotApiStandIn
from bot.lab.telegram_standin.faults import FaultKind
from bot.sdnotify import Notifier, notifying_systemd, watchdog_interval
from tests.test_run import KAI, ROOT, SQUAD, TOKEN, config

Datagrams = list[tuple[float, str]]  # (monotonic time received, assignment)


async def receive(sock: socket.socket, into: Datagrams) -> None:
    loop = asyncio.get_running_loop()
    while True:
        data = await loop.sock_recv(sock, 4096)
        into += [(time.monotonic(), line) for line in data.decode().split("\n")]


async def until(predicate: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def times(got: Datagrams, assignment: str) -> list[float]:
    return [at for at, line in got if line == assignment]


async def test_gwbot_run_notifies_ready_feeds_the_watchdog_only_while_healthy_and_notifies_stopping(tmp_path):
    address = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(address))
    sock.setblocking(False)
    got: Datagrams = []
    listener = asyncio.create_task(receive(sock, got))
    async with SimulatedGateway(port=0) as gw, BotApiStandIn(token=TOKEN) as standin:
        standin.user(KAI, "Kai", "kai")
        standin.group(SQUAD, "squad")
        cfg = config(tmp_path, standin.base_url, gw.port)
        cfg.write_text(cfg.read_text(encoding="utf-8") + f"""selfcheck: {{every: 1}}
watch: {{alert_chat_ids: [{SQUAD}], down_after: 0, expected: [], relogin_reminder: 0}}
""", encoding="utf-8")
        env = {**{k: v for k, v in os.environ.items() if k != "WATCHDOG_PID"}, "TELEGRAM_BOT_TOKEN": standin.token,
               "NOTIFY_SOCKET": str(address), "WATCHDOG_USEC": "1000000"}  # WatchdogSec=1: every 0.5 s
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "--config", str(cfg), "run", cwd=ROOT,
                                                    env=env, stderr=asyncio.subprocess.PIPE)
        try:
            await until(lambda: bool(times(got, "READY=1")), 30)
            await until(lambda: len(times(got, "WATCHDOG=1")) >= 2, 5)
            assert times(got, "READY=1")[0] <= times(got, "WATCHDOG=1")[0]
            # One 429 keeps the watch's alert waiting 3 s: longer than selfcheck.every, so the outbox is stuck.
            await gw.wait_for_clients(1, 20)
            standin.faults.add(FaultKind.RETRY_AFTER, chat_id=SQUAD, seconds=3)
            asked = time.monotonic()
            await gw.stop()
            await standin.wait_for(lambda m: True, SQUAD, 20)
            delivered = time.monotonic()
            await until(lambda: times(got, "WATCHDOG=1")[-1] > delivered, 5)
            while_stuck = [at for at in times(got, "WATCHDOG=1") if asked + 1.5 < at < delivered]
            assert delivered - asked > 2.5 and not while_stuck, "no WATCHDOG=1 while a message is stuck"
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 30)
            await until(lambda: bool(times(got, "STOPPING=1")), 5)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            listener.cancel()
            sock.close()
    assert proc.returncode == 0, err.decode()
    assert not [at for at in times(got, "WATCHDOG=1") if at > times(got, "STOPPING=1")[0]]


async def test_abstract_socket_names_start_with_at():
    name = f"gwbot-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.setblocking(False)
    try:
        notifier = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert notifier is not None
        assert await notifier.send("READY=1", "STATUS=running")
        notifier.close()
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 4096), 2)
    finally:
        sock.close()
    assert data == b"READY=1\nSTATUS=running"


async def test_without_notify_socket_nothing_is_set_up(tmp_path):
    assert Notifier.from_env({}) is None and Notifier.from_env({"NOTIFY_SOCKET": ""}) is None
    assert Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"}) is None, "not an AF_UNIX address"
    async with notifying_systemd(None, 1, {}):  # type: ignore[arg-type]  # never touched without a socket
        pass


def test_watchdog_interval_is_half_of_watchdog_sec_and_only_for_this_process():
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None and watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "x"}) is None
