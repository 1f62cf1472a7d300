"""Live state is the core's: a job's client events keep its Gateway's LiveView current, whoever started it."""

from __future__ import annotations

import asyncio

from bot.checks.soak import SoakOptions
from bot.jobs import JobBoard
from bot.lab.operators import SilentOperator
from bot.runner import Runner, RunRequest, Step
from tests.test_checks import config_for, repo  # noqa: F401  (the repo fixture)


async def test_a_running_job_feeds_its_gateways_live_view_with_no_front_end_help(repo, gateway):  # noqa: F811
    jobs = JobBoard(Runner(config_for(gateway.port), repo, {}))
    job = await jobs.start(RunRequest(("soak",), "tester", "pytest", options=(SoakOptions(30),)), SilentOperator())
    try:
        for _ in range(100):
            if job.live.connected is not None and job.live.last_rtt is not None:
                break
            await asyncio.sleep(0.05)
        assert jobs.current(job.gateway) is job
        health = job.live.health(config_for(gateway.port).gateway(), 1.0)
        assert health.source == "live" and health.accounts == tuple(gateway.accounts)
        assert health.last_rtt is not None, "the soak's heartbeats reached the view"
    finally:
        await jobs.shutdown()
    assert jobs.current(job.gateway) is None, "no view once nothing runs: /status probes instead"


def test_the_live_view_takes_2110_as_the_ib_link_down_and_a_connecting_farm_as_not_ok():
    """2110 'connectivity between TWS and server is broken' is the IB link down, as 1100 is;
    2119 'farm is connecting' is a farm not serving yet (tws-api-notes: a real Gateway's day)."""
    from bot.config import GatewayConfig
    from bot.health import LiveView
    from bot.ibkr.events import Connected, GatewayNotice, NoticeKind

    live = LiveView()
    live.on_event(Connected(server_version=178, accounts=("DU1",), connection_time=""))
    live.on_event(GatewayNotice(code=2104, message="", notice=NoticeKind.FARM_OK, farm="usfarm"))
    live.on_event(GatewayNotice(code=2110, message="", notice=NoticeKind.SERVER_BROKEN))
    assert live.health(GatewayConfig(), 1.0).link_ok is False
    live.on_event(GatewayNotice(code=1102, message="", notice=NoticeKind.LINK_RESTORED))
    live.on_event(GatewayNotice(code=2119, message="", notice=NoticeKind.FARM_CONNECTING, farm="usfarm"))
    health = live.health(GatewayConfig(), 1.0)
    assert health.link_ok is True and health.farms_ok is False


async def test_a_job_tells_each_step_as_it_begins_and_ends_even_when_cancelled(repo, gateway):  # noqa: F811
    """What the chat hooks the watch's suppression to: the reconnect step has begun before the
    operator is asked to stop the Gateway, and its end is told however it ends."""
    steps: list[Step] = []
    asked: list[list[Step]] = []

    class Recording(SilentOperator):
        async def ask(self, action, text):
            asked.append(list(steps))
            return await super().ask(action, text)

    jobs = JobBoard(Runner(config_for(gateway.port), repo, {}))
    job = await jobs.start(RunRequest(("port", "reconnect"), "tester", "pytest"), Recording(), on_step=steps.append)
    try:
        async with asyncio.timeout(10):
            while not asked:
                await asyncio.sleep(0.02)
    finally:
        await jobs.cancel(job.gateway)
    assert asked[0] == [Step("port", True), Step("port", False), Step("reconnect", True)]
    assert steps == [*asked[0], Step("reconnect", False)]
