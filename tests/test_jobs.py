"""Live state is the core's: a job's client events keep its Gateway's LiveView current, whoever started it."""

from __future__ import annotations

import asyncio

from bot.checks.soak import SoakOptions
from bot.jobs import JobBoard
from bot.lab.operators import SilentOperator
from bot.runner import Runner, RunRequest
from tests.test_checks import config_for, repo  # noqa: F401  (the repo fixture)


async def test_a_running_job_feeds_its_gateways_live_view_with_no_front_end_help(repo, gateway):  # noqa: F811
    jobs = JobBoard(Runner(config_for(gateway.port), repo, {}))
    job = await jobs.start(RunRequest(("soak",), "tester", "pytest", options=(SoakOptions(30),)), SilentOperator())
    try:
        for _ in range(100):
            if job.live.connected is not None and job.live.last_rtt is not None:
                break
            await asyncio.sleep(0.05)
        assert jobs.live(job.gateway) is job.live
        health = job.live.health(config_for(gateway.port).gateway(), 1.0)
        assert health.source == "live" and health.accounts == tuple(gateway.accounts)
        assert health.last_rtt is not None, "the soak's heartbeats reached the view"
    finally:
        await jobs.shutdown()
    assert jobs.live(job.gateway) is None, "no view once nothing runs: /status probes instead"
