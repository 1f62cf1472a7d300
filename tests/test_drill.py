"""The drill: IBC's RESTART against a real simulated Gateway and its IBC command server, every stage timed."""

from __future__ import annotations

import pytest

from bot.checks import checklist
from bot.checks.drill import LAST_STAGE, OUTAGE, READY_TO_RECONNECTED, DrillOptions, Stage
from bot.config import IbcAddress
from bot.lab.ibc_sim import IbcProfile
from bot.lab.simctl import ControlServer
from bot.report import markdown
from bot.runner import RunStatus
from storage import CheckStatus, Repository
from tests.test_checks import config_for, run
from tests.test_ibc_sim import early_in_minute


@pytest.fixture
async def repo(tmp_path):
    r = await Repository.open(tmp_path / "gwbot.sqlite3")
    yield r
    await r.close()


@pytest.fixture
async def ibc_port(gateway):
    """IBC's command server beside the ``gateway`` fixture, its minute short."""
    gateway.ibc.profile = IbcProfile(minute=0.4, down=0.2, ready_after=0.2)
    ctl = ControlServer(gateway, port=0)
    await ctl.start()
    yield ctl.port
    await ctl.stop()


async def drill(repo, gateway, ibc_port, **options):
    await early_in_minute(gateway.ibc.profile.minute)
    return await run(repo, gateway.port, ["drill"], gateway={"ibc": IbcAddress(ibc_port, "127.0.0.1")},
                     options=(DrillOptions(**({"down_within": 2, "back_within": 2} | options)),))


async def test_drill_passes_with_every_stage_in_order(repo, gateway, ibc_port):
    outcome, progress = await drill(repo, gateway, ibc_port)
    result = outcome.results[0]
    assert outcome.status is RunStatus.PASSED, (result.error, result.findings)
    times = [result.metric(s.metric) for s in Stage if s is not Stage.LINK_OK]
    assert None not in times, result.metrics
    assert times == sorted(times) or times[1:3] == sorted(times[1:3], reverse=True)  # drop and port close: a tie
    assert 0.15 < result.metric(OUTAGE) < 1.5  # port down 0.2 s, API ready 0.2 s later
    assert result.metric(READY_TO_RECONNECTED) < 1.5
    assert result.metric(Stage.LINK_OK.metric) is not None, "the farms' 2104s after the restart"
    assert any("IBC accepted RESTART" in p.message for p in progress)
    report = markdown(await repo.get_run(outcome.run_id))
    assert "Stage timeline" in report and "handshake answered" in report and "port closed" in report


async def test_a_gateway_that_never_comes_back_fails_naming_the_last_stage(repo, gateway, ibc_port):
    gateway.ibc.profile = IbcProfile(minute=0.4, down=30, ready_after=0.2)
    outcome, _ = await drill(repo, gateway, ibc_port, back_within=1)
    result = outcome.results[0]
    assert outcome.status is RunStatus.FAILED
    assert "did not come back" in result.error and "last stage reached was 'port closed'" in result.error, result.error
    assert result.facts[LAST_STAGE] == "port closed"
    gateway.cancel_restart()


async def test_restart_accepted_but_never_down_is_ibc_restart_missed(repo, gateway, ibc_port):
    gateway.ibc.profile = IbcProfile(minute=60, down=0.2, ready_after=0.2)  # the minute falls after the allowance
    outcome, _ = await run(repo, gateway.port, ["drill"], gateway={"ibc": IbcAddress(ibc_port, "127.0.0.1")},
                           options=(DrillOptions(down_within=0.5),))
    assert outcome.status is RunStatus.FAILED
    assert "accepted RESTART at " in outcome.results[0].error
    assert "never went down within 0.5 s" in outcome.results[0].error
    gateway.cancel_restart()


async def test_a_drill_without_ibc_is_skipped_with_one_line_and_is_no_pass(repo, gateway):
    outcome, _ = await run(repo, gateway.port, ["drill"])
    result = outcome.results[0]
    assert result.status is CheckStatus.SKIPPED and outcome.status is RunStatus.FAILED
    assert "configure ibc: {port: 7462}" in result.error and "or use reconnect" in result.error
    assert "\n" not in result.error


def test_the_checklist_drills_where_ibc_is_configured_and_guides_elsewhere(gateway):
    plain = config_for(gateway.port).gateway()
    with_ibc = config_for(gateway.port, {"ibc": IbcAddress(7462, "127.0.0.1")}).gateway()
    assert checklist(plain) == ("port", "connect", "soak", "disconnect", "reconnect", "errors")
    assert checklist(with_ibc) == ("port", "connect", "soak", "disconnect", "drill", "errors")
