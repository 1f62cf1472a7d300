"""`gwbot bench`: the figures gwbot promises, measured against the simulated Gateway.

Numbers, not assertions: a noisy machine changes them, so they are reported (README, issue
notes) rather than enforced by tests.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from telegram import Bot

from bot.config import Config, GatewayConfig, OutboxConfig, SoakConfig, TelegramConfig
from bot.ibkr.client import ClientOptions, IBKRClient, ReconnectPolicy, wait_for_port
from bot.ibkr.errors import ConnectionRejected
from bot.ibkr.events import Disconnected, DisconnectReason, Reconnected, ReconnectGaveUp, next_event
from bot.lab.chat import LabChat, lab_chat
from bot.lab.simulator import Reject, SimulatedGateway
from bot.lab.telegram_standin import BotApiStandIn, User
from bot.outbox import Outbox
from bot.services import with_gateway
from bot.stats import percentile
from handlers.delivery import TelegramTransport
from storage import OutMessage, Repository

SQUAD, PERSON = -100, 42  # the bench's group chat and its one person (PERSON's private chat: the alerts')
# Client options as in the tests: the seed's 10 s delay would only measure the sleep.
OPTIONS = ClientOptions(connect_timeout=2.0, heartbeat_interval=1.0, heartbeat_timeout=1.0, probe_interval=0.05,
                        reconnect=ReconnectPolicy.from_config(GatewayConfig(reconnect_delay=0.5)))


@dataclass(frozen=True)
class Figure:
    name: str
    samples: tuple[float, ...]
    unit: str

    def line(self) -> str:
        s = sorted(self.samples)
        p95 = percentile(s, 0.95)
        return (f"{self.name:<52} median {statistics.median(s):8.2f} {self.unit:<3} p95 {p95:8.2f}  "
                f"max {s[-1]:8.2f}  (n={len(s)})")


@asynccontextmanager
async def loop_lags(tick: float) -> AsyncIterator[list[float]]:
    """Every tick's lateness (ms) while the context runs: the event loop's lag, as a distribution."""
    lags: list[float] = []

    async def sample() -> None:
        while True:
            start = time.monotonic()
            await asyncio.sleep(tick)
            lags.append(max(0.0, time.monotonic() - start - tick) * 1000)
    task = asyncio.create_task(sample())
    try:
        yield lags
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def last_id(standin: BotApiStandIn, chat: int) -> int:
    """The newest bot message's id in ``chat`` (0: none yet): what comes after it is new."""
    return max((m.message_id for m in standin.messages(chat)), default=0)


async def round_trip(standin: BotApiStandIn, chat: int, person: int, text: str, expect: str) -> float:
    """ms from a person's command to the bot's next message in ``chat`` that contains ``expect``."""
    last = last_id(standin, chat)
    start = time.monotonic()
    standin.send_text(chat, person, text)
    await standin.wait_for(lambda m: m.message_id > last and expect in m.text, chat, 10)
    return (time.monotonic() - start) * 1000


async def _repeat(n: int, trial: Callable[[], Awaitable[float]]) -> tuple[float, ...]:
    return tuple([await trial() for _ in range(n)])


async def measure(trials: int = 10, pings: int = 40) -> list[Figure]:
    async with SimulatedGateway(port=0) as gw:
        client = IBKRClient("127.0.0.1", gw.port, 1, OPTIONS)

        async def connect_time() -> float:
            start = time.monotonic()
            await client.connect()
            took = time.monotonic() - start
            await client.disconnect()
            return took * 1000

        async def stop_detection() -> float:
            await client.connect()
            async with client.events.stream() as q:
                start = time.monotonic()
                await gw.stop()
                event = await next_event(q, Disconnected, 5)
            await client.disconnect()
            await gw.start()
            assert event.reason is DisconnectReason.PEER_CLOSED
            return (event.mono - start) * 1000

        async def restart_to_reconnected() -> float:
            await client.connect()
            async with client.events.stream() as q:
                await gw.stop()
                await next_event(q, Disconnected, 5)
                await asyncio.sleep(1.0)
                back = time.monotonic()
                await gw.start()
                event = await next_event(q, Reconnected, 10)
            await client.disconnect()
            return (event.mono - back) * 1000

        async def freeze_detection() -> float:
            await client.connect()
            async with client.events.stream() as q:
                start = time.monotonic()
                gw.freeze()
                event = await next_event(q, Disconnected, 10)
            gw.unfreeze()
            await client.disconnect()
            return event.mono - start

        figures = [Figure("connect (handshake, accounts, next order id)", await _repeat(trials, connect_time), "ms")]
        # No 1 s spacing here: the simulator answers back-to-back pings, real Gateways may not.
        # Fewer than 45 in a burst: ib_async throttles beyond 45 requests a second.
        pinger = IBKRClient("127.0.0.1", gw.port, 2, replace(OPTIONS, min_ping_spacing=0.0))
        await pinger.connect()
        await asyncio.sleep(1.1)  # let the start-up sync's requests leave ib_async's 1 s throttle window
        rtts = [await pinger.ping() * 1000 for _ in range(pings)]
        await pinger.disconnect()
        figures.append(Figure("heartbeat RTT (reqCurrentTime)", tuple(rtts), "ms"))
        figures.append(Figure("drop detected after Gateway stop", await _repeat(trials, stop_detection), "ms"))
        async with loop_lags(0.005) as lags:
            reconnects = await _repeat(trials, restart_to_reconnected)
        figures.append(Figure("Gateway back -> API reconnected", reconnects, "ms"))
        figures.append(Figure("worst loop stall during reconnects", (max(lags, default=0.0),), "ms"))
        figures.append(Figure("frozen Gateway detected (interval 1 s, timeout 1 s)",
                              await _repeat(max(2, trials // 3), freeze_detection), "s"))
        before = _rss_mb()
        await _repeat(200, connect_time)
        figures.append(Figure("max RSS growth over 200 connect/disconnect", (_rss_mb() - before,), "MB"))
        figures.append(Figure("max RSS of the process", (_rss_mb(),), "MB"))
    return figures


async def measure_chat(commands: int = 30) -> list[Figure]:
    """/status and /help round trips through the Bot API stand-in while a soak runs."""
    async with _bench_chat(soak=600) as lab:
        await round_trip(lab.standin, SQUAD, PERSON, "/soak 10", "started by")
        await lab.standin.wait_for(lambda m: m.text.startswith("⏳ soak"), SQUAD, 10)
        async with loop_lags(0.005) as lags:
            status = [await round_trip(lab.standin, SQUAD, PERSON, "/status", "Running now: soak")
                      for _ in range(commands)]
            helps = [await round_trip(lab.standin, SQUAD, PERSON, "/help", "/checklist") for _ in range(commands)]
        await round_trip(lab.standin, SQUAD, PERSON, "/cancel", "Cancelled")
    return [Figure("/status round trip during a soak", tuple(status), "ms"),
            Figure("/help round trip during a soak", tuple(helps), "ms"),
            Figure("worst loop stall while chatting during a soak", (max(lags, default=0.0),), "ms")]


@asynccontextmanager
async def _bench_chat(soak: float, client_options: dict[str, Any] | None = None,
                      **gateway: Any) -> AsyncIterator[LabChat]:
    """gwbot in the lab, used by PERSON in the group SQUAD, its data in a throwaway folder."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Config(data_dir=Path(tmp), soak=SoakConfig(duration=soak, heartbeat_interval=1, progress_interval=1),
                        telegram=TelegramConfig(progress_interval=1))
        async with lab_chat(with_gateway(config, **gateway), [User(PERSON, "Bench", "bench")], {SQUAD: "bench"},
                            client_options=client_options) as lab:
            yield lab


async def measure_lifecycle(trials: int = 10, outage: float = 90.0, outage_trials: int = 1) -> list[Figure]:
    """A real Gateway's ordinary life: a long outage of a Gateway in its own process, a Gateway
    whose API is ready only after its port, a Gateway refusing before the handshake."""
    return [
        Figure(f"port back -> reconnected after a {outage:g} s outage (SIGKILL, delay 10 s, 5 attempts)",
               await _repeat(outage_trials, lambda: _killed_gateway_outage(outage)), "s"),
        Figure("API ready -> reconnected (port open 2-3 s before the API)", await _api_ready_trials(trials), "s"),
        Figure("close before the handshake -> ConnectionRejected", await _rejection_trials(trials), "ms"),
    ]


async def _killed_gateway_outage(outage: float) -> float:
    """`gwbot simulate` in its own process, killed with SIGKILL and started again ``outage`` s
    later; the client has the checklist's settings. Seconds from port back to reconnected."""
    port = free_ports(1)[0]
    seed = GatewayConfig()  # delay 10 s, 5 attempts, timeout 10 s
    client = IBKRClient.from_config(replace(seed, port=port))
    gateway = await spawn_simulator(port)
    try:
        await client.connect()
        async with client.events.stream() as q:
            await kill(gateway)
            await next_event(q, Disconnected, 10)
            await asyncio.sleep(outage)
            gateway = await spawn_simulator(port)
            back = time.monotonic()
            event = await next_event(q, (Reconnected, ReconnectGaveUp), 60)
        if not isinstance(event, Reconnected):
            raise RuntimeError(f"did not reconnect after the {outage:g} s outage: {event}")
        return event.mono - back
    finally:
        await client.disconnect()
        await kill(gateway)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


async def spawn_simulator(port: int, control_port: int = 0, *, logs: bool = False,
                          extra: Sequence[str] = ()) -> asyncio.subprocess.Process:
    """`gwbot simulate` in its own process; returns as soon as its port accepts connections.
    ``logs``: its log lines on ``proc.stderr`` (the caller must keep reading them); ``extra``: more flags."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "simulate", "--port", str(port), "--control-port", str(control_port), *extra,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE if logs else asyncio.subprocess.DEVNULL,
        env=os.environ | {"GWBOT_CONFIG": ""})
    try:
        async with asyncio.timeout(20):
            await wait_for_port("127.0.0.1", port, 0.005)
    except TimeoutError:
        await kill(proc)
        raise RuntimeError("the simulator process did not open its port within 20 s") from None
    return proc


async def kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL, as when a Gateway's machine loses power; a process already gone is left alone."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()


async def _api_ready_trials(trials: int) -> tuple[float, ...]:
    async with SimulatedGateway(port=0) as gw:
        client = IBKRClient("127.0.0.1", gw.port, 1, ClientOptions(probe_interval=0.05))  # the seed's
        await client.connect()
        out = []
        for i in range(trials):
            # Spread the moment the API becomes ready over the client's 1 s retry cycle.
            ready_after = 2.0 + i / trials
            async with client.events.stream() as q:
                gw.set_ready(False)
                await gw.stop(reset=True)
                await next_event(q, Disconnected, 5)
                await asyncio.sleep(0.5)
                await gw.start()
                ready_at = time.monotonic() + ready_after
                gw.ready_after(ready_after)
                event = await next_event(q, Reconnected, 30)
            out.append(event.mono - ready_at)
        await client.disconnect()
    return tuple(out)


async def _rejection_trials(trials: int) -> tuple[float, ...]:
    async with SimulatedGateway(port=0) as gw:
        client = IBKRClient("127.0.0.1", gw.port, 1)
        out = []
        for i in range(trials):
            gw.set_reject(Reject.RST if i % 2 else Reject.FIN)
            start = time.monotonic()
            try:
                await client.connect()
            except ConnectionRejected:
                out.append((time.monotonic() - start) * 1000)
            else:
                raise RuntimeError("a rejecting Gateway let the client in")
    return tuple(out)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------- outbox
async def measure_outbox_cost(messages: int = 200) -> list[Figure]:
    """A text sent straight through PTB vs. written to the outbox and delivered by its sender."""
    with tempfile.TemporaryDirectory() as tmp:
        async with BotApiStandIn() as standin, await Repository.open(Path(tmp) / "bench.sqlite3") as repo, \
                Bot(standin.token, base_url=standin.base_url) as bot:
            standin.user(PERSON, "Bench", "bench")
            # No rate limit here: it would measure the 1 s spacing, not the cost of writing first.
            config = OutboxConfig(chat_interval=0, overall_per_second=10**6)
            transport = TelegramTransport(bot, config.send_timeout)
            outbox = Outbox(repo.outbox, config)
            await outbox.load()
            await outbox.start(transport)
            try:
                plain, stored = [], []
                for i in range(messages):
                    start = time.monotonic()
                    await transport.send(PERSON, OutMessage.plain(f"plain {i}"))
                    plain.append((time.monotonic() - start) * 1000)
                    start = time.monotonic()
                    await outbox.delivered(await outbox.enqueue(PERSON, [OutMessage.plain(f"outbox {i}")]), 10)
                    stored.append((time.monotonic() - start) * 1000)
            finally:
                await outbox.stop()
    return [Figure(f"plain send (PTB -> stand-in), p99 {percentile(plain, 0.99):.2f} ms", tuple(plain), "ms"),
            Figure(f"outbox write + send + mark, p99 {percentile(stored, 0.99):.2f} ms", tuple(stored), "ms")]


async def measure_outage(down: float = 120.0, alerts: int = 12) -> list[Figure]:
    """The Bot API refuses connections for ``down`` seconds while a /checklist finishes and alerts
    pile up for another chat; then: time from its return to the last result / alert delivered."""
    async with _bench_chat(soak=3, client_options={"probe_interval": 0.05}, reconnect_delay=0.5, heartbeat_interval=1,
                           heartbeat_timeout=1) as lab:
        gw, standin, services = lab.gateway, lab.standin, lab.services
        assert gw is not None  # started by the lab, not attached
        # The alerts' chat has its sender before the checklist starts: the error matrix counts
        # the tasks a row leaves behind, and a sender starting mid-row would look like one.
        await services.outbox.delivered(await services.outbox.enqueue(
            PERSON, [OutMessage.plain("bench: alerts follow")]), 10)
        standin.send_text(SQUAD, PERSON, "/checklist")
        # The guided reconnect step: act on the simulated Gateway as the squad would.
        await standin.wait_for(lambda m: "Stop the Gateway now" in m.text, SQUAD, 60)
        await gw.stop()
        await standin.wait_for(lambda m: "Start the Gateway again now" in m.text, SQUAD, 60)
        await asyncio.sleep(1)
        # The Bot API goes away while the checklist ends (reconnect, then the error matrix).
        await standin.refuse_connections()
        await gw.start()
        down_at = time.monotonic()
        alert_ids: list[int] = []

        async def alert_now_and_then() -> None:  # alerts (the watch's) piling up meanwhile
            for i in range(alerts):
                alert_ids.extend(await services.outbox.enqueue(PERSON, [OutMessage.plain(
                    f"🔴 alert {i}: bench Gateway event {i}")]))
                await asyncio.sleep(down / alerts / 2)
        alerting = asyncio.create_task(alert_now_and_then())
        latest = await services.repo.latest_run()
        assert latest is not None  # the checklist was started above
        # The run's status is in the database, written by the run's own task: polled.
        while (run := await services.repo.get_run(latest.id)) is not None and run.status == "running":  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        status = run.status if run is not None else "gone"
        finished = time.monotonic() - down_at
        await alerting
        stored = -1  # the chart is drawn after the run ends: wait until nothing more comes
        while (count := await services.outbox.store.count(SQUAD)) != stored:
            stored = count
            await asyncio.sleep(2)
        result_ids = [r.id for r in await services.outbox.store.pending(SQUAD)]
        await asyncio.sleep(max(0.0, down - (time.monotonic() - down_at)))
        await standin.accept_connections()
        back = time.monotonic()
        await services.outbox.delivered(result_ids, 120)
        results_at = time.monotonic() - back
        await services.outbox.delivered(alert_ids, 120)
        alerts_at = time.monotonic() - back
        rows = [await services.outbox.store.get(i) for i in result_ids]
    sent = [standin.message(SQUAD, r.telegram_id) for r in rows if r is not None and r.telegram_id]
    got = [m for m in sent if m is not None]  # in_order below still counts one that went missing
    kinds = "+".join(str(m.kind) for m in got)
    in_order = len(got) == len(result_ids) and [m.message_id for m in got] == sorted(m.message_id for m in got)
    shown = [m.text for m in standin.messages(PERSON)][1:]
    once = len(set(shown)) == len(shown)
    digest = "1 digest" if len(shown) == 1 and shown[0].startswith("📬") else f"{len(shown)} messages"
    return [Figure(f"API back -> checklist results ({kinds}) delivered (down {down:g} s, run {status} "
                   f"{finished:.0f} s in; order kept: {'yes' if in_order else 'NO'})", (results_at,), "s"),
            Figure(f"API back -> {alerts} alerts delivered as {digest} (each once: {'yes' if once else 'NO'})",
                   (alerts_at,), "s")]
