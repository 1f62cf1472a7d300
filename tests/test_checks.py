"""Each check's pass and fail paths, run through the Runner against the simulated Gateway."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from tenacity import stop_after_delay, wait_fixed

from bot.checks.base import OperatorAction, OperatorReply, Reply
from bot.checks.errors import ROWS, ErrorsCheck, Row
from bot.checks.soak import SoakOptions
from bot.config import ChecksConfig, Config, SoakConfig
from bot.ibkr.client import IBKRClient, ReconnectPolicy
from bot.ibkr.errors import GatewayRefused
from bot.ibkr.events import ReconnectGaveUp, next_event
from bot.lab.operators import AutoOperator, SilentOperator
from bot.lab.simulator import SimulatedGateway
from bot.runner import Runner, RunRequest, RunStatus
from bot.services import with_gateway
from storage import Repository
from tests.conftest import FAST, free_port


@pytest.fixture
async def repo(tmp_path):
    r = await Repository.open(tmp_path / "gwbot.sqlite3")
    yield r
    await r.close()


def config_for(port: int, gateway: dict | None = None, **checks) -> Config:
    cfg = Config(soak=SoakConfig(duration=2, heartbeat_interval=1, progress_interval=1),
                 checks=ChecksConfig(**({"reconnect_within": 5, "operator_timeout": 3} | checks)))
    return with_gateway(cfg, **({"host": "127.0.0.1", "port": port, "reconnect_delay": 0.3, "connect_timeout": 2,
                                 "heartbeat_interval": 1, "heartbeat_timeout": 1} | (gateway or {})))


async def run(repo, port, names, operator=None, **kw):
    config = config_for(port, kw.pop("gateway", None), **kw.pop("checks", {}))
    runner = Runner(config, repo, {"probe_interval": FAST.probe_interval})
    progress = []
    outcome = await runner.run(RunRequest(tuple(names), "tester", "pytest", **kw), operator or SilentOperator(),
                               progress.append)
    return outcome, progress


def metric(result, name):
    value = result.metric(name)
    assert value is not None, f"{result.name} has no metric {name}: {result.metrics}"
    return value


async def test_port_passes_and_measures(repo, gateway):
    outcome, _ = await run(repo, gateway.port, ["port"])
    assert outcome.status is RunStatus.PASSED
    assert 0 < metric(outcome.results[0], "tcp_connect") < 500


async def test_port_fails_on_a_refused_port(repo):
    outcome, _ = await run(repo, free_port(), ["port"])
    result = outcome.results[0]
    assert outcome.status is RunStatus.FAILED
    assert "Connection refused" in result.error and "Start IBKR Gateway" in result.hints


async def test_connect_reports_version_accounts_farms_and_layers(repo, gateway):
    outcome, _ = await run(repo, gateway.port, ["connect"])
    result = outcome.results[0]
    assert outcome.status is RunStatus.PASSED, result
    assert metric(result, "server_version") == 178
    text = "\n".join(result.findings)
    assert "Managed accounts: DUO779750" in text
    assert "2104: Market data farm 'usfarm' connection OK (normal, not an error)" in text
    assert "Layers reached: TCP port, API handshake, API ready (logged in), start-up sync, paper account, " \
           "link to IB servers, data farms" in text


async def test_connect_fails_on_client_id_in_use(repo, gateway):
    holder = IBKRClient("127.0.0.1", gateway.port, 1, FAST)
    await holder.connect()
    outcome, _ = await run(repo, gateway.port, ["connect"])
    await holder.disconnect()
    result = outcome.results[0]
    assert outcome.status is RunStatus.FAILED
    assert "326" in result.error
    assert any("failed at: API ready" in f for f in result.findings)


async def test_connect_fails_on_the_paper_guard(repo):
    async with SimulatedGateway(port=0, accounts=("U7654321",)) as live:
        outcome, _ = await run(repo, live.port, ["connect"])
    assert outcome.status is RunStatus.FAILED
    assert "Refusing live account U7654321" in outcome.results[0].error


async def test_connect_names_the_layer_when_not_logged_in(repo, gateway):
    gateway.set_ready(False)
    outcome, _ = await run(repo, gateway.port, ["connect"])
    result = outcome.results[0]
    assert "not logged in" in result.error
    assert any("Layers reached: TCP port, API handshake; failed at: API ready" in f for f in result.findings)


async def test_soak_passes_with_progress_and_rtt_figures(repo, gateway):
    outcome, progress = await run(repo, gateway.port, ["soak"])
    result = outcome.results[0]
    assert outcome.status is RunStatus.PASSED, result
    assert metric(result, "heartbeats") >= 2 and metric(result, "missed_heartbeats") == 0
    assert metric(result, "drops") == 0
    assert 0 < metric(result, "rtt_median") <= metric(result, "rtt_p95") <= metric(result, "rtt_max")
    assert len(result.series) >= 2 and all(rtt is not None for _, rtt in result.series)
    assert progress and progress[0].check == "soak" and "Still connected" in progress[0].message


async def test_soak_fails_when_the_gateway_freezes(repo, gateway):
    async def freeze_soon():
        await asyncio.sleep(0.5)
        gateway.freeze()

    freezer = asyncio.create_task(freeze_soon())
    outcome, _ = await run(repo, gateway.port, ["soak"], options=(SoakOptions(4),))
    await freezer
    gateway.unfreeze()
    result = outcome.results[0]
    assert outcome.status is RunStatus.FAILED
    assert metric(result, "missed_heartbeats") >= 1
    assert None in [rtt for _, rtt in result.series]


async def test_soak_ends_early_when_the_connection_is_not_recovered(repo, gateway):
    async def stop_soon():
        await asyncio.sleep(0.5)
        await gateway.stop()

    stopper = asyncio.create_task(stop_soon())
    outcome, _ = await run(repo, gateway.port, ["soak"], options=(SoakOptions(30),), gateway={"give_up_after": 2})
    await stopper
    result = outcome.results[0]
    assert outcome.status is RunStatus.FAILED
    assert "Connection lost and not recovered" in result.error
    assert (result.ended_at - result.started_at).total_seconds() < 10, "did not wait out the 30 s"
    assert metric(result, "drops") == 1


async def test_disconnect_is_clean(repo, gateway):
    outcome, _ = await run(repo, gateway.port, ["disconnect"])
    assert outcome.status is RunStatus.PASSED, outcome.results[0]
    assert metric(outcome.results[0], "disconnect") < 1000


async def test_reconnect_guided_by_an_operator(repo, gateway):
    outcome, _ = await run(repo, gateway.port, ["reconnect"], AutoOperator(gateway, reaction=0.2, down_for=0.5))
    result = outcome.results[0]
    assert outcome.status is RunStatus.PASSED, result
    assert 0.15 < metric(result, "prompt_to_drop") < 1.0
    assert metric(result, "back_to_reconnected") < 1.0
    assert metric(result, "reconnect_attempts") >= 1
    stored = await repo.get_run(outcome.run_id)
    kinds = [e.kind for e in stored.events]
    assert "disconnected" in kinds and "reconnected" in kinds
    steps = [(e.data["action"], e.data["outcome"]) for e in stored.events if e.kind == "operator_step"]
    assert ("stop the Gateway", "asked") in steps and ("start the Gateway", "asked") in steps


class StopsButNeverStarts(AutoOperator):
    async def ask(self, action, text):
        if action is OperatorAction.START_GATEWAY:
            return OperatorReply(Reply.DONE, by="liar")
        return await super().ask(action, text)


async def test_reconnect_fails_when_the_gateway_stays_down(repo, gateway):
    outcome, _ = await run(repo, gateway.port, ["reconnect"], StopsButNeverStarts(gateway, reaction=0.1))
    result = outcome.results[0]
    assert outcome.status is RunStatus.FAILED
    assert "gave up after 5 attempts" in result.error or "had not reconnected" in result.error
    assert "Check `max_reconnect_attempts` in config" in result.hints


async def test_reconnect_operator_who_never_acts_hits_the_deadline(repo, gateway):
    outcome, _ = await asyncio.wait_for(run(repo, gateway.port, ["reconnect"], SilentOperator()), 10)
    assert outcome.status is RunStatus.FAILED
    assert "Nobody stopped the Gateway within 3 s" in outcome.results[0].error


class Aborts:
    async def tell(self, text):
        pass

    async def ask(self, action, text):
        return OperatorReply(Reply.ABORT, by="@kai")


async def test_reconnect_abort_is_a_cancellation(repo, gateway):
    outcome, _ = await run(repo, gateway.port, ["reconnect"], Aborts())
    assert outcome.status is RunStatus.CANCELLED
    assert outcome.results[0].error == "aborted by @kai"


async def test_errors_matrix_every_row_as_expected(repo, gateway):
    outcome, _ = await run(repo, gateway.port, ["errors"])
    result = outcome.results[0]
    assert outcome.status is RunStatus.PASSED, result.error
    assert metric(result, "rows_ok") == metric(result, "rows") == len(ROWS)
    for row in ROWS:
        assert any(f.startswith(f"ok: {row.name}: {row.expected.__name__}") for f in result.findings), row.name


async def test_errors_matrix_reports_a_wrong_row(repo, gateway):
    wrong = (Row("refused port, wrongly expected to be unresolvable", type(None), 1.0, ROWS[0].endpoint),)
    ctx_cfg = config_for(gateway.port)
    from bot.checks.base import CheckContext
    result = await ErrorsCheck(wrong).run(CheckContext(ctx_cfg, ctx_cfg.gateway(), SilentOperator()))
    assert result.status.value == "failed"
    assert f"expected NoneType, got {GatewayRefused.__name__}" in result.error


async def test_checklist_stops_on_failure_or_goes_on(repo):
    port = free_port()  # no Gateway at all
    stopped, _ = await run(repo, port, ["port", "connect", "disconnect"], stop_on_failure=True)
    assert [r.name for r in stopped.results] == ["port"]
    went_on, _ = await run(repo, port, ["port", "connect", "disconnect"], stop_on_failure=False)
    assert [r.name for r in went_on.results] == ["port", "connect", "disconnect"]
    assert all(not r.passed for r in went_on.results)


async def test_cancelling_mid_soak_stores_a_cancelled_run(repo, gateway):
    task = asyncio.create_task(run(repo, gateway.port, ["soak"], options=(SoakOptions(30),)))
    await asyncio.sleep(1.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gateway.clients == [] or not any(c.ready for c in gateway.clients)
    [summary] = await repo.list_runs()
    stored = await repo.get_run(summary.id)
    assert stored.status == "cancelled"
    assert stored.checks[0].status == "cancelled"
    assert any("soak" in entry.message for entry in stored.logs), "log lines were journaled as the run went"


async def test_stored_run_carries_config_without_secrets(repo, gateway):
    runner = Runner(replace(config_for(gateway.port)), repo)
    outcome = await runner.run(RunRequest(("port",), "tester", "pytest"), SilentOperator())
    stored = await repo.get_run(outcome.run_id)
    assert stored.config["gateways"][0]["port"] == gateway.port
    assert "token" not in stored.config["telegram"]


# ---------------------------------------------------------------- a real Gateway's ordinary life
async def test_connect_passes_with_a_note_on_a_read_only_api(repo, gateway):
    gateway.set_readonly(True)
    outcome, _ = await run(repo, gateway.port, ["connect"])
    result = outcome.results[0]
    assert outcome.status is RunStatus.PASSED, result
    assert any("Read-Only" in f and "fine" in f for f in result.findings)
    assert not result.warnings


async def test_connect_warns_about_a_start_up_request_that_never_answers(repo, gateway):
    gateway.set_hang([7])  # executions (ib_async #82/#84)
    outcome, _ = await run(repo, gateway.port, ["connect"])
    result = outcome.results[0]
    assert outcome.status is RunStatus.PASSED, result
    assert len(result.warnings) == 1 and "executions" in result.warnings[0]
    stored = (await repo.get_run(outcome.run_id)).checks[0]
    assert stored.warnings == result.warnings and not any("executions" in f for f in stored.findings)


async def test_connect_a_farm_blip_within_the_grace_is_a_note_and_inactive_farms_are_normal(repo, gateway):
    gateway.set_connect_notices([2103, 2107, 2108, 2158])

    async def farm_back():
        await gateway.wait_for_clients(1)
        await asyncio.sleep(0.3)
        await gateway.send_notice(2104)

    back = asyncio.create_task(farm_back())
    outcome, _ = await run(repo, gateway.port, ["connect"], checks={"farm_grace": 3})
    await back
    result = outcome.results[0]
    assert outcome.status is RunStatus.PASSED, result
    assert not result.warnings
    text = "\n".join(result.findings)
    assert "'usfarm' was broken or connecting at connect and came back" in text
    assert "'ushmds' inactive but available on demand (normal)" in text


async def test_connect_a_farm_still_broken_after_the_grace_is_a_warning_not_a_failure(repo, gateway):
    gateway.set_connect_notices([2119, 2106, 2158])
    outcome, _ = await run(repo, gateway.port, ["connect"], checks={"farm_grace": 0.3})
    result = outcome.results[0]
    assert outcome.status is RunStatus.PASSED, result
    assert len(result.warnings) == 1 and "usfarm" in result.warnings[0]


async def test_soak_fails_on_a_nightly_reset_naming_when_how_long_and_how_it_came_back(repo, gateway):
    async def reset_soon():
        await asyncio.sleep(0.5)
        await gateway.begin_reset(1.0, lost=True)

    resetter = asyncio.create_task(reset_soon())
    outcome, _ = await run(repo, gateway.port, ["soak"], options=(SoakOptions(3),))
    await resetter
    result = outcome.results[0]
    assert outcome.status is RunStatus.FAILED, result
    assert result.error.startswith("IB link lost at ") and "(1100) for 1." in result.error
    assert "; came back with 1101: back — subscriptions lost, resubscribe" in result.error
    assert metric(result, "link_outages") == 1
    farms = sorted(w.split()[2] for w in result.warnings if w.startswith("Data farm") and " for 1." in w)
    assert farms == ["'secdefnj'", "'usfarm'", "'ushmds'"], result.warnings
    assert not any(f.startswith("Stayed connected") for f in result.findings)


@pytest.mark.parametrize("code", [1100, 2110])
async def test_soak_fails_when_the_link_is_lost_and_never_restored(repo, gateway, code):
    async def lose_link():
        await gateway.wait_for_clients(1)
        await gateway.send_notice(code)

    loser = asyncio.create_task(lose_link())
    outcome, _ = await run(repo, gateway.port, ["soak"], options=(SoakOptions(2),))
    await loser
    result = outcome.results[0]
    assert outcome.status is RunStatus.FAILED, result
    assert f"({code})" in result.error and "not restored by the end of the soak" in result.error


async def test_a_soak_that_dropped_does_not_say_it_stayed_connected_and_counts_agree(repo, gateway):
    async def freeze_then_thaw():
        await gateway.wait_for_clients(1)
        [soaking] = gateway.clients
        gateway.freeze()
        # The frozen Gateway keeps the old socket; a new one is the soak reconnecting after its drop.
        while all(c is soaking for c in gateway.clients):
            await asyncio.sleep(0.05)
        gateway.unfreeze()  # at once: a later thaw could leave the reconnect after the soak's end

    freezer = asyncio.create_task(freeze_then_thaw())
    outcome, _ = await run(repo, gateway.port, ["soak"], options=(SoakOptions(5),))
    await freezer
    result = outcome.results[0]
    assert outcome.status is RunStatus.FAILED
    assert not any("Stayed connected" in f for f in result.findings)
    record = await repo.get_run(outcome.run_id)
    missed_events = [e for e in record.events if e.kind == "heartbeat" and e.message == "Heartbeat missed"]
    missed = int(metric(result, "missed_heartbeats"))
    assert missed >= 1 and missed == len(missed_events) == sum(rtt is None for _, rtt in result.series)
    assert f"{missed} heartbeat(s) went unanswered" in result.error
    assert any(f.startswith("Reconnected at") for f in result.findings), "the reconnect that followed is reported"


async def test_reconnect_passes_for_a_restart_whose_api_is_ready_after_the_port(repo, gateway):
    # `simctl restart 3 --ready-after 2`, short for the real 90 s / 20 s.
    class Restarter(AutoOperator):
        async def ask(self, action, text):
            if action is OperatorAction.STOP_GATEWAY:
                await gateway.begin_restart(3.0, ready_after=2.0, reset=True)
            return await asyncio.Event().wait()  # the check notices by itself

    outcome, _ = await run(repo, gateway.port, ["reconnect"], Restarter(gateway),
                           checks={"operator_timeout": 10})
    result = outcome.results[0]
    assert outcome.status is RunStatus.PASSED, result
    assert metric(result, "back_to_reconnected") < 1.5 + 1.0
    assert 1.5 < metric(result, "port_back_to_reconnected") < 5
    assert any("still starting" in f and "not an error" in f for f in result.findings)


async def test_no_error_check_hears_only_its_own_client(repo, gateway):
    # Gateway B beside: its client sees 1100 (ib_async logs it at ERROR) and gives up
    # reconnecting (an ERROR line of B's own client), over and over while A's disconnect check runs.
    async with SimulatedGateway(port=0) as other:
        gives_up = ReconnectPolicy(stop_after_delay(0.1), wait_fixed(0.5))
        b = IBKRClient("127.0.0.1", other.port, 9, replace(FAST, reconnect=gives_up))
        done = asyncio.Event()
        gave_up = 0

        async def trouble():
            nonlocal gave_up
            while not done.is_set():
                await b.connect()
                async with b.events.stream() as q:
                    await other.send_notice(1100)
                    await other.stop()
                    await next_event(q, ReconnectGaveUp, 5)
                    gave_up += 1
                await other.start()

        noise = asyncio.create_task(trouble())
        outcome, _ = await run(repo, gateway.port, ["disconnect"])
        done.set()
        await noise
        await b.disconnect()
    assert gave_up >= 2
    assert outcome.status is RunStatus.PASSED, outcome.results[0]
