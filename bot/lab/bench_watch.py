"""`gwbot bench` figures for the always-on watch: the whole bot (watch -> outbox -> PTB ->
Bot API stand-in), simulated Gateways in their own processes, SIGKILLed; baselines measured in the
same run (a seed-style fixed-sleep reconnect loop, a fixed-interval TCP poller)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bot.checks.drill import ORDERED, TOTAL, DrillCheck
from bot.config import Config, GatewayConfig, IbcAddress, SoakConfig, TelegramConfig, WatchConfig
from bot.ibkr.client import ClientOptions, IBKRClient, port_accepts
from bot.ibkr.errors import GatewayError
from bot.lab.bench import PERSON, Figure, free_ports, kill, last_id, loop_lags, round_trip, spawn_simulator
from bot.lab.chat import LabChat, lab_chat
from bot.lab.operators import SilentOperator
from bot.lab.simctl import send_control
from bot.lab.telegram_standin import BotApiStandIn, BotMessage, User
from bot.runner import Runner, RunRequest
from bot.services import Services, with_gateway
from bot.stats import percentile
from bot.watch.state import Phase
from storage import Repository, RunStatus

log = logging.getLogger(__name__)
# PERSON: the alert chat, a private chat (Telegram: ~1 message/s, no per-minute group limit)
SEED_DELAY = 10.0  # the seed's fixed reconnect sleep
POLL_EVERY = 10.0  # the baseline poller's interval (Uptime Kuma's default is 60 s; 10 s is kind to it)
# Fifty simulated Gateways in one helper process, so one SIGKILL takes them all down at once.
MANY_SCRIPT = """
import asyncio, sys
from bot.lab.simulator import SimulatedGateway
async def main(ports):
    gws = [SimulatedGateway(port=p) for p in ports]
    for g in gws:
        await g.start()
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main([int(p) for p in sys.argv[1:]]))
"""


def _config(data_dir: Path, ports: list[int], *, heartbeat: tuple[float, float] = (10.0, 5.0)) -> Config:
    """The checklist's Gateway settings (heartbeat 10 s / 5 s), the watch with no windows."""
    gws = tuple(GatewayConfig(name=f"gw{i}" if i else "paper", port=p, client_id=1 + i * 10,
                              heartbeat_interval=heartbeat[0], heartbeat_timeout=heartbeat[1])
                for i, p in enumerate(ports))
    return Config(data_dir=data_dir, gateways=gws,
                  soak=SoakConfig(duration=3600, heartbeat_interval=5, progress_interval=30),
                  telegram=TelegramConfig(progress_interval=5),
                  # Repeated trials would otherwise count as flapping (one summary, then quiet).
                  watch=WatchConfig(alert_chat_ids=frozenset({PERSON}), down_after=0, expected=(),
                                    relogin_reminder=0, flap_count=1000))


@asynccontextmanager
async def _watching(ports: list[int], heartbeat: tuple[float, float] = (10.0, 5.0)) -> AsyncIterator[LabChat]:
    """The whole bot watching Gateways on ``ports`` (first port 0: a simulated Gateway of its own)."""
    with tempfile.TemporaryDirectory() as tmp:
        async with lab_chat(_config(Path(tmp), ports, heartbeat=heartbeat), [User(PERSON, "Bench", "bench")],
                            watch_options={}, attach_port=ports[0] or None) as lab:
            yield lab  # polling, its command menu set


async def _up(services: Services, timeout: float = 60) -> None:
    assert services.watch is not None
    async with asyncio.timeout(timeout):
        while not all(w.state.phase is Phase.UP for w in services.watch.watchers.values()):  # noqa: ASYNC110 - polls the watch's state
            await asyncio.sleep(0.01)


async def _more_than(times: list[float], n: int) -> None:
    """Until a baseline has recorded more than ``n`` times (polled: the baselines announce nothing)."""
    while len(times) <= n:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


async def _next(standin: BotApiStandIn, mark: str, after: int, timeout: float = 60) -> BotMessage:
    return await standin.wait_for(lambda m: m.message_id > after and m.text.startswith(mark), PERSON, timeout)


async def _seed_loop(port: int, connected: list[float]) -> None:
    """The seed's reconnect: connect; on failure sleep a fixed 10 s; forever. Records each connect's time."""
    client = IBKRClient("127.0.0.1", port, 900, ClientOptions(reconnect=None))
    try:
        while True:
            try:
                await client.connect()
            except GatewayError:
                await asyncio.sleep(SEED_DELAY)
                continue
            connected.append(time.monotonic())
            while await client.is_connected():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        await client.disconnect()


async def _poller(port: int, failed: list[float]) -> None:
    """A monitoring tool's check: a TCP connect every POLL_EVERY seconds; records each failure's time."""
    while True:
        if not await port_accepts("127.0.0.1", port, 1.0):
            failed.append(time.monotonic())
        await asyncio.sleep(POLL_EVERY)


async def measure_kill(trials: int = 10, outage: float = 90.0, baseline_trials: int = 3) -> list[Figure]:
    """SIGKILL of the simulator's process -> 🔴 accepted; API ready again -> 🟢 accepted (the last
    trial after ``outage`` s); baselines in the first ``baseline_trials`` trials."""
    port = free_ports(1)[0]
    red: list[float] = []
    green: list[float] = []
    long_green: list[float] = []
    seed: list[float] = []
    poll: list[float] = []
    sim = await spawn_simulator(port)
    try:
        async with _watching([port]) as lab:
            services, standin = lab.services, lab.standin
            seed_at: list[float] = []
            poll_at: list[float] = []
            baselines = [asyncio.create_task(_seed_loop(port, seed_at)),
                         asyncio.create_task(_poller(port, poll_at))]
            try:
                for trial in range(trials):
                    await _up(services)
                    # Telegram takes ~1 message/s per chat (outbox.chat_interval): a 🔴 right after
                    # the last 🟢 would measure that wait, not the watch.
                    await asyncio.sleep(services.config.outbox.chat_interval + 0.2)
                    measure_baseline = trial < baseline_trials
                    if measure_baseline:
                        await _more_than(seed_at, trial)  # the seed loop is connected too
                    after = last_id(standin, PERSON)
                    polls = len(poll_at)
                    killed = time.monotonic()
                    await kill(sim)
                    down = await _next(standin, "🔴", after)
                    red.append((down.sent_at - killed) * 1000)
                    if measure_baseline:
                        await _more_than(poll_at, polls)
                        poll.append((poll_at[-1] - killed) * 1000)
                    last_trial = trial == trials - 1
                    await asyncio.sleep(outage if last_trial else 1.0)
                    after = last_id(standin, PERSON)
                    sim = await spawn_simulator(port)
                    ready = time.monotonic()
                    back = await _next(standin, "🟢", after)
                    (long_green if last_trial else green).append(back.sent_at - ready)
                    if measure_baseline:
                        await _more_than(seed_at, trial + 1)
                        seed.append(seed_at[-1] - ready)
            finally:
                for t in baselines:
                    t.cancel()
                await asyncio.gather(*baselines, return_exceptions=True)
    finally:
        await kill(sim)
    figures = [Figure("SIGKILL -> 🔴 accepted by the Bot API (down_after 0) [≤100 med, ≤250 worst]", tuple(red), "ms"),
               Figure(f"baseline: TCP poller every {POLL_EVERY:g} s detects the kill", tuple(poll), "ms"),
               Figure("API ready -> 🟢 accepted (1 s outage) [≤1.5 s]", tuple(green), "s"),
               Figure(f"API ready -> 🟢 accepted after a {outage:g} s outage [≤1.5 s]", tuple(long_green), "s"),
               Figure(f"baseline: seed loop (fixed {SEED_DELAY:g} s sleep) reconnects", tuple(seed), "s")]
    return [f for f in figures if f.samples]


async def measure_restart(trials: int = 2, down: float = 60.0, ready_after: float = 15.0) -> list[Figure]:
    """`simctl restart DOWN --ready-after S` on a simulator in its own process, through its control
    port, as a real Gateway's daily restart: port closed ``down`` s, then open but logging in for
    ``ready_after`` s. Seconds from its API being ready (its log line says when) to 🟢 accepted."""
    port, control = free_ports(2)
    ready: asyncio.Queue[float] = asyncio.Queue()
    sim = await spawn_simulator(port, control, logs=True)
    assert sim.stderr is not None  # logs=True
    reading = asyncio.create_task(_ready_lines(sim.stderr, ready))
    green: list[float] = []
    try:
        async with _watching([port]) as lab:
            services, standin = lab.services, lab.standin
            for trial in range(trials):
                await _up(services)
                await asyncio.sleep(services.config.outbox.chat_interval + 0.2)  # as in measure_kill
                after = last_id(standin, PERSON)
                # The watcher tries about once a second while the Gateway logs in: spread the moment
                # its API becomes ready over that cycle, or every trial would land on the same phase.
                logging_in = ready_after + trial / trials
                answer = await send_control("127.0.0.1", control, f"restart {down:g} --ready-after {logging_in:.3f}")
                if not answer.startswith("OK"):
                    raise RuntimeError(f"the simulator refused the restart: {answer}")
                ready_at = await asyncio.wait_for(ready.get(), down + ready_after + 30)
                back = await _next(standin, "🟢", after)
                green.append(back.sent_at - ready_at)
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        await kill(sim)
    return [Figure(f"restart: port closed {down:g} s, API ready {ready_after:g}-{ready_after + 1:g} s later -> "
                   "🟢 accepted [≤1.5 s]", tuple(green), "s")]


async def _ready_lines(log_lines: asyncio.StreamReader, ready: asyncio.Queue[float]) -> None:
    """Reads the simulator's log to its end (a full pipe would stall it); queues the moment of
    every "ready" line, on this process's clock."""
    while line := await log_lines.readline():
        if line.rstrip().endswith(b"bot.lab.simulator: simulated Gateway ready"):
            ready.put_nowait(time.monotonic())


async def measure_frozen(trials: int = 5, heartbeat: tuple[float, float] = (2.0, 1.0)) -> list[Figure]:
    """A frozen Gateway (accepts nothing, answers nothing) -> 🔴: bounded by heartbeat interval + timeout."""
    out = []
    async with _watching([0], heartbeat) as lab:
        gw, services, standin = lab.gateway, lab.services, lab.standin
        assert gw is not None  # started by the lab
        for _ in range(trials):
            await _up(services)
            after = last_id(standin, PERSON)
            frozen = time.monotonic()
            gw.freeze()
            down = await _next(standin, "🔴", after)
            out.append(down.sent_at - frozen)
            after = last_id(standin, PERSON)
            gw.unfreeze()
            await _next(standin, "🟢", after)
    bound = heartbeat[0] + heartbeat[1] + 0.1
    return [Figure(f"frozen -> 🔴 accepted (heartbeat {heartbeat[0]:g} s + {heartbeat[1]:g} s) [≤{bound:g} s]",
                   tuple(out), "s")]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def measure_many(gateways: int = 50, settle: float = 20.0, commands: int = 1000) -> list[Figure]:
    """``gateways`` watched from this process: loop lag and CPU while all are up; a /help round
    trip while a soak runs beside them (``commands`` times); then all killed at once: every 🔴
    delivered within Telegram's limits."""
    ports = free_ports(gateways)
    many = await asyncio.create_subprocess_exec(sys.executable, "-c", MANY_SCRIPT, *map(str, ports),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
                                                env=os.environ | {"GWBOT_CONFIG": ""})
    figures: list[Figure] = []
    try:
        assert many.stdout is not None
        await asyncio.wait_for(many.stdout.readline(), 60)
        async with _watching(ports) as lab:
            services, standin = lab.services, lab.standin
            await _up(services, timeout=120)
            async with loop_lags(0.01) as lags:
                cpu, wall = _cpu(), time.monotonic()
                await asyncio.sleep(settle)
                cpu_pct = 100 * (_cpu() - cpu) / (time.monotonic() - wall)
                figures.append(Figure(f"{gateways} Gateways watched: event-loop lag [p99 ≤2 ms]",
                                      tuple(lags), "ms"))
                figures.append(Figure(f"{gateways} Gateways watched: CPU % of a core over {settle:g} s [≤5]",
                                      (cpu_pct,), "%"))
                figures.append(await _commands_during_soak(standin, commands))
            after = last_id(standin, PERSON)
            killed = time.monotonic()
            await kill(many)
            names = list(services.watch.watchers) if services.watch else []
            seen: dict[str, float] = {}  # Gateway -> when its first 🔴 (alone or in a digest) was accepted
            async with asyncio.timeout(gateways * 3 + 60):
                while len(seen) < gateways:
                    await asyncio.sleep(0.1)
                    new = [m for m in standin.messages(PERSON) if m.message_id > after]
                    seen = {n: m.sent_at for m in reversed(new) for n in names if f"🔴 {n} is DOWN" in m.text}
            shown = [m for m in standin.messages(PERSON) if m.message_id > after]
            digests = _digest_parts(m.text for m in shown)  # the outbox folds a burst into a digest
            log.debug("after the kill: %s", [m.text[:120] for m in shown])
            figures.append(Figure(f"all {gateways} killed at once -> every 🔴 accepted, none lost (s after the "
                                  f"kill; {len(shown)} messages, {digests} of them digest parts)",
                                  tuple(sorted(t - killed for t in seen.values())), "s"))
    finally:
        await kill(many)
    return figures


def _digest_parts(texts: Iterable[str]) -> int:
    """Messages that carry a digest: a long one goes in parts, "(1/2) 📬 …" then "(2/2) …"."""
    parts = (re.match(r"\(1/(\d+)\) ", t) for t in texts if "📬" in t)
    return sum(int(m.group(1)) if m else 1 for m in parts)


async def _commands_during_soak(standin: BotApiStandIn, commands: int) -> Figure:
    await round_trip(standin, PERSON, PERSON, "/soak 60", "started by")
    times = [await round_trip(standin, PERSON, PERSON, "/help", "/checklist") for _ in range(commands)]
    await round_trip(standin, PERSON, PERSON, "/cancel", "Cancelled")
    return Figure("/help round trip, soak running + Gateways watched [p99 ≤50, worst ≤50]", tuple(times), "ms")


async def measure_drill(trials: int = 3, down: float = 40.0, ready_after: float = 15.0,
                        minute: float = 5.0) -> list[Figure]:
    """The drill check, ``trials`` times, against `gwbot simulate` in its own process answering IBC's
    RESTART (its "next minute" ``minute`` s long, then port closed ``down`` s, API ready ``ready_after``
    s after it reopens), with the checklist's client settings: RESTART accepted -> the check's client
    reconnected, and the stretch before each stage (seconds, and its share of the whole on average)."""
    port, control = free_ports(2)
    sim = await spawn_simulator(port, control, extra=(
        "--ibc-minute", f"{minute:g}", "--ibc-down", f"{down:g}", "--ibc-ready-after", f"{ready_after:g}"))
    totals: list[float] = []
    stretches: dict[str, list[float]] = {s.label: [] for s in ORDERED[1:]}
    shares: dict[str, list[float]] = {s.label: [] for s in ORDERED[1:]}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = with_gateway(Config(data_dir=Path(tmp)), host="127.0.0.1", port=port,
                                  ibc=IbcAddress(control, "127.0.0.1"))
            async with await Repository.open(Path(tmp) / "bench.sqlite3") as repo:
                for _ in range(trials):
                    outcome = await Runner(config, repo).run(RunRequest((DrillCheck.name,), "bench", "bench"),
                                                             SilentOperator())
                    result = outcome.results[0]
                    total = result.metric(TOTAL)
                    if outcome.status is not RunStatus.PASSED or total is None:
                        raise RuntimeError(f"the drill did not pass ({outcome.status}): {result.error}")
                    totals.append(total)
                    reached = 0.0  # the drop and the port's close come in either order: a stretch is never < 0
                    for stage in ORDERED[1:]:
                        seen = result.metric(stage.metric)
                        at = reached if seen is None else seen
                        stretches[stage.label].append(max(0.0, at - reached))
                        shares[stage.label].append(max(0.0, at - reached) / total)
                        reached = max(reached, at)
    finally:
        await kill(sim)
    figures = [Figure(f"drill: RESTART accepted -> client reconnected (IBC minute {minute:g} s, port closed "
                      f"{down:g} s, API ready {ready_after:g} s later)", tuple(totals), "s")]
    figures += [Figure(f"  to {label} ({100 * statistics.mean(shares[label]):.0f} % of it)", tuple(times), "s")
                for label, times in stretches.items()]
    return figures


def figure_line(f: Figure) -> str:
    """The table's line: median, p99 and worst (the watch's targets are p99s and worsts)."""
    j = figure_json(f)
    return (f"{f.name:<60} median {j['median']:9.2f} {f.unit:<3} p99 {j['p99']:9.2f}  worst {j['worst']:9.2f}  "
            f"(n={j['n']})")


def figure_json(f: Figure) -> dict[str, Any]:
    s = sorted(f.samples)
    return {"name": f.name, "unit": f.unit, "n": len(s), "median": statistics.median(s) if s else None,
            "p99": percentile(s, 0.99) if s else None, "worst": s[-1] if s else None}
