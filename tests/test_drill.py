"""The drill: IBC's RESTART against a real simulated Gateway and its IBC command server, every stage timed."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import pytest

from bot.chart import drill_figure
from bot.checks import checklist
from bot.checks.drill import LAST_STAGE, OUTAGE, READY_TO_RECONNECTED, DrillOptions, Stage, compared
from bot.config import IbcAddress, WatchConfig
from bot.lab.chat import lab_chat
from bot.lab.ibc_sim import IbcProfile
from bot.lab.simctl import ControlServer
from bot.lab.telegram_standin import User
from bot.report import compared as compared_from
from bot.report import markdown, summary
from bot.runner import RunStatus
from bot.services import with_gateway
from bot.watch.state import Phase
from storage import CheckStatus, Metric, Repository
from tests.conftest import FAST, free_port
from tests.test_chat import KAI, SQUAD, Chat, chat_config
from tests.test_chat_watch import WATCH_OPTIONS, _until, alerts
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
    check = (await repo.get_run(outcome.run_id)).check("drill")
    ax = drill_figure(check).axes[0]
    assert len(ax.patches) == 3, "a bar for accepted, dropped and port closed, none for the stages never reached"
    assert sum(t.get_text().strip() == "not reached" for t in ax.texts) == len(Stage) - 3
    assert [t.get_text() for t in ax.get_yticklabels()] == [s.label for s in Stage]
    assert await compared_from(repo, await repo.get_run(outcome.run_id)) == "", \
        "a drill that measured no outage is compared with nothing"


def test_a_drill_is_put_beside_the_earlier_ones_in_words():
    assert compared(71.2, [74, 93, 60]) == (
        "this drill 71 s; last 3 drills median 74 s, worst 93 s (down -> reconnected)")
    assert compared(0.42, [0.5]) == "this drill 0.4 s; last 1 drill median 0.5 s, worst 0.5 s (down -> reconnected)"
    assert compared(71, []) == "this drill 71 s; the first drill on this Gateway (down -> reconnected)"


async def seed_drills(repo: Repository, outages: list[float], gateway: str = "paper") -> None:
    """Earlier drills on ``gateway``, as stored by a drill that measured these outages."""
    for outage in outages:
        run = await repo.create_run("drill", gateway, "x", "terminal", {})
        check = await repo.start_check(run, "drill")
        await repo.finish_check(check, "passed", metrics=[Metric(OUTAGE, outage, "s")])
        await repo.finish_run(run, "passed")


async def test_a_drill_is_compared_with_this_gateways_earlier_drills_in_summary_and_report(repo, gateway, ibc_port):
    await seed_drills(repo, [1.0, 1.0, 9.0, 7.0, 5.0, 6.0])
    await seed_drills(repo, [99.0], gateway="live")
    await seed_drills(repo, [8.0, 4.0, 3.0, 2.0])  # the last 8: the two oldest are left out
    outcome, _ = await drill(repo, gateway, ibc_port)
    stored = await repo.get_run(outcome.run_id)
    words = await compared_from(repo, stored)
    this = stored.check("drill").metric(OUTAGE)
    assert words == f"this drill {this:.1f} s; last 8 drills median 5.5 s, worst 9.0 s (down -> reconnected)"
    assert f"Compared: {words}" in summary(stored, words)
    assert f"**Compared with earlier drills:** {words}" in markdown(stored, words)


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


@contextlib.asynccontextmanager
async def drill_chat(tmp_path, **checks):
    """A watched chat whose simulated Gateway runs IBC's command server, configured under ``ibc``."""
    ctl_port = free_port()
    base = chat_config(tmp_path)
    config = with_gateway(replace(base, checks=replace(base.checks, **checks), watch=WatchConfig(
        alert_chat_ids=frozenset({SQUAD}), down_after=0.3, expected=(), relogin_reminder=0)),
        ibc=IbcAddress(ctl_port, "127.0.0.1"))
    async with lab_chat(config, [User(KAI, "Kai", "kai")], {SQUAD: "squad"},
                        client_options={"probe_interval": FAST.probe_interval}, watch_options=WATCH_OPTIONS) as lab:
        assert lab.gateway is not None
        lab.gateway.ibc.profile = IbcProfile(minute=0.4, down=0.6, ready_after=0.3)  # down past down_after
        ctl = ControlServer(lab.gateway, port=ctl_port)
        await ctl.start()
        try:
            await _until(lambda: lab.services.watch.watcher().state.phase is Phase.UP)
            yield Chat(lab.standin, lab.gateway, lab.services)
        finally:
            await ctl.stop()


@pytest.fixture
async def drilled(tmp_path):
    async with drill_chat(tmp_path) as chat:
        yield chat


async def test_chat_drill_of_a_gateway_that_never_comes_back_fails_and_becomes_a_real_red(tmp_path):
    async with drill_chat(tmp_path, drill_down_within=5.0, drill_back_within=1.0) as chat:
        chat.gateway.ibc.profile = IbcProfile(minute=0.4, down=60, ready_after=0.3)  # not back in this test
        await early_in_minute(chat.gateway.ibc.profile.minute)
        started = await chat.ask("/drill", "drill on paper")
        result = await chat.wait(lambda m: "drill on paper, run #1" in m.text, started.message_id, timeout=10)
        assert result.text.startswith("❌ FAILED") and "last stage reached was 'port closed'" in result.text
        red = await chat.wait(lambda m: m.text.startswith("🔴"), started.message_id, timeout=5)
        assert "paper is DOWN" in red.text, "past the drill's allowance the outage is a real one"
        chat.gateway.cancel_restart()


async def test_chat_drill_passes_with_its_timeline_and_the_watch_files_it_as_a_test(drilled):
    watcher = drilled.services.watch.watcher()
    await seed_drills(drilled.services.repo, [3.0])  # run #1
    await early_in_minute(drilled.gateway.ibc.profile.minute)
    started = await drilled.ask("/drill", "drill on paper")
    await _until(lambda: watcher.state.incident is not None)
    assert watcher.state.incident.test == "drill"
    result = await drilled.wait(lambda m: "drill on paper, run #2" in m.text, started.message_id, timeout=10)
    assert "Compared: this drill " in result.text and "; last 1 drill median 3.0 s, worst 3.0 s" in result.text
    report = await drilled.wait(lambda m: "Stage timeline" in m.text, result.message_id)
    assert "IBC accepted RESTART" in report.text and "handshake answered" in report.text
    assert "Compared with earlier drills: this drill" in report.text
    chart = await drilled.wait(lambda m: m.kind == "photo", report.message_id)
    assert chart.file_bytes.startswith(b"\x89PNG") and chart.file_name == "gwbot-run-2-drill.png"
    assert (await drilled.services.repo.get_run(2)).status == "passed"
    assert alerts(drilled, "🔴") == [], "the drill's own restart is no outage"


async def test_chat_drill_on_a_gateway_without_ibc_is_refused_in_one_line(tmp_path):
    async with lab_chat(chat_config(tmp_path), [User(KAI, "Kai", "kai")], {SQUAD: "squad"}) as lab:
        chat = Chat(lab.standin, lab.gateway, lab.services)
        answer = await chat.ask("/drill", "/drill needs IBC")
        assert answer.text == ("/drill needs IBC's command server on paper: add ibc: {port: 7462} under it in the "
                               "config (CommandServerPort in IBC's config.ini), or use /reconnect paper")
        assert await lab.services.repo.list_runs() == []
