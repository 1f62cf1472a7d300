"""Shared fixtures: free loopback ports and a running simulated Gateway."""

from __future__ import annotations

import socket

import pytest
from hypothesis import HealthCheck, settings
from tenacity import stop_after_attempt, stop_after_delay, wait_fixed

from bot.ibkr.client import ClientOptions, ReconnectPolicy

# Model-based tests (tests/test_*_model.py): bounded in CI, as long as you like with
# `pytest --timeout=0 --hypothesis-profile=long tests/test_watch_model.py` (the README has the command).
settings.register_profile("ci", max_examples=60, stateful_step_count=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=5000, stateful_step_count=80, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
async def gateway():
    """A running simulated IB Gateway on a free loopback port."""
    from bot.lab.simulator import SimulatedGateway

    async with SimulatedGateway(port=0) as gw:
        yield gw


# Client options that keep lifecycle tests fast: the seed's 10 s delay would dominate them.
FAST = ClientOptions(
    connect_timeout=2.0,
    heartbeat_interval=1.0,
    heartbeat_timeout=1.0,
    probe_interval=0.05,
    reconnect=ReconnectPolicy(stop_after_attempt(5) | stop_after_delay(900), wait_fixed(0.5)),
)
