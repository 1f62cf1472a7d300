"""`gwbot` as a person runs it: real subprocesses, real simulated Gateway, real database file."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


def config_file(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"data_dir: data\n{extra}", encoding="utf-8")
    return path


async def gwbot(*args: str, stdin: bytes | None = None, timeout: float = 90) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, cwd=ROOT, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin or b""), timeout)
    return proc.returncode, out.decode(), err.decode()


async def test_demo_passes_then_history_and_report(tmp_path):
    cfg = str(config_file(tmp_path))
    code, out, err = await gwbot("--config", cfg, "demo", "--soak", "3")
    assert code == 0, out + err
    assert "**Status:** ✅ PASSED" in out
    assert "Still connected after" in out, "soak progress is shown as it goes"
    assert "Reconnected within 30 seconds (" in out
    code, out, _ = await gwbot("--config", cfg, "history")
    assert code == 0 and "#1" in out and "passed" in out and "6/6 passed" in out
    code, out, _ = await gwbot("--config", cfg, "report", "1", "--out", str(tmp_path / "r.md"))
    assert code == 0
    assert (tmp_path / "r.md").read_text(encoding="utf-8").startswith("## Results")
    assert (tmp_path / "data" / "gwbot.sqlite3").exists()
    code, out, _ = await gwbot("--config", cfg, "logs", "1")
    assert code == 0 and "check reconnect passed" in out and "ib_async.client: API connection failed" in out


async def test_bad_config_is_one_clear_line(tmp_path):
    code, _out, err = await gwbot("--config", str(config_file(tmp_path, "ibkr: {port: abc}\n")), "history")
    assert code == 2
    assert err.strip() == "gwbot: config.yaml: ibkr.port: expected an integer 1-65535, got 'abc'"


async def test_missing_report_and_refused_port(tmp_path):
    cfg = str(config_file(tmp_path))
    code, _, err = await gwbot("--config", cfg, "report", "99999")
    assert code == 2 and "no run #99999" in err
    code, out, _ = await gwbot("--config", cfg, "check", "port", "--port", str(free_port()))
    assert code == 1
    assert "Connection refused" in out and "hint: Start IBKR Gateway" in out


async def test_check_reconnect_walks_a_person_through_a_real_simulate_process(tmp_path):
    port, control = free_port(), free_port()
    sim = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "simulate", "--port", str(port), "--control-port", str(control),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        async with asyncio.timeout(10):  # said once both ports listen
            while not (await sim.stdout.readline()).startswith(b"Simulated IB Gateway on"):
                pass
        code, out, _ = await gwbot("simctl", "status", "--control-port", str(control))
        assert code == 0 and out.startswith("OK running")

        check = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "--config", str(config_file(tmp_path)), "check", "reconnect",
            "--port", str(port), cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        transcript: list[str] = []

        async def wait_for(text: str) -> None:
            while True:
                line = (await asyncio.wait_for(check.stdout.readline(), 30)).decode()
                assert line, "\n".join(transcript)
                transcript.append(line)
                if text in line:
                    return

        await wait_for("Stop the Gateway now")
        assert (await gwbot("simctl", "stop", "--control-port", str(control)))[0] == 0
        await wait_for("Start the Gateway again now")
        await asyncio.sleep(1)
        assert (await gwbot("simctl", "start", "--control-port", str(control)))[0] == 0
        rest = (await asyncio.wait_for(check.stdout.read(), 30)).decode()
        assert await check.wait() == 0, "".join(transcript) + rest
        assert "✅ reconnect: passed" in rest
        assert "Reconnected" in rest and "after the Gateway was back" in rest
    finally:
        sim.terminate()
        await sim.wait()


async def test_simctl_errors_are_explained(gateway):
    """Against a running control port: each bad argument is one ERROR line, exit 2, nothing changed."""
    from bot.lab.simctl import ControlServer
    ctl = ControlServer(gateway, port=0)
    await ctl.start()
    try:
        cases = {("bogus",): "ERROR Command invalid; commands:", ("latency", "abc"): "ERROR latency: SECONDS must be",
                 ("ready", "maybe"): "ERROR ready: usage: ready on|off",
                 ("latency", "-1"): "ERROR latency: SECONDS must",
                 ("restart", "-5"): "ERROR restart: DOWN must be",
                 ("reject", "x"): "ERROR reject: usage: reject fin|rst|off",
                 ("restart", "5", "--ready-after", "-1"): "ERROR restart: --ready-after must be"}
        for words, expected in cases.items():
            code, out, err = await gwbot("simctl", *words, "--control-port", str(ctl.port))
            assert code == 2 and out.startswith(expected) and out.count("\n") == 1 and not err, (words, out, err)
        assert gateway.running and gateway.ready and gateway.latency == 0 and gateway.faults() == []
        code, out, _ = await gwbot("simctl", "stop", "--rst", "--control-port", str(ctl.port))
        assert code == 0 and out.startswith("OK stop (clients reset)") and not gateway.running
        code, out, _ = await gwbot("simctl", "status", "--control-port", str(free_port()))
        assert code == 1 and out.startswith("ERROR no simulated Gateway control port")
    finally:
        await ctl.stop()


def test_simctl_against_a_web_server_says_it_is_not_the_simulator(capsys):
    from bot.frontends.cli import main

    with socket.create_server(("127.0.0.1", 0)) as web:
        def answer() -> None:
            conn, _ = web.accept()
            with conn:
                conn.recv(100)
                conn.sendall(b"<!DOCTYPE HTML>\n<html><body>Bad request</body></html>\n")
        server = threading.Thread(target=answer, daemon=True)
        server.start()
        port = web.getsockname()[1]
        code = main(["simctl", "status", "--control-port", str(port)])
        server.join(5)
    out, err = capsys.readouterr()
    assert (code, err) == (1, ""), err
    assert out == (f"ERROR no simulated Gateway control port at 127.0.0.1:{port}: it answered '<!DOCTYPE HTML>', "
                   "which the simulator never says\n")


def test_simulate_on_a_port_in_use_is_one_line_exit_2_and_claims_nothing(capsys):
    from bot.frontends.cli import main

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        for flags, flag in ((["--port", str(port), "--control-port", "0"], "--port"),
                            (["--port", str(free_port()), "--control-port", str(port)], "--control-port")):
            assert main(["simulate", *flags]) == 2
            out, err = capsys.readouterr()
            assert out == "" and err == f"gwbot simulate: cannot listen on 127.0.0.1:{port}: address already in use; " \
                                        f"pick another {flag}\n", err
    assert main(["simulate", "--host", "no.such.host.invalid", "--port", str(free_port())]) == 2
    out, err = capsys.readouterr()
    assert (out, err.count("\n")) == ("", 1) and err.startswith("gwbot simulate: cannot listen on no.such"), err
    assert err.endswith("; pick another --host\n"), err


# ------------------------------------------------------------------ bad flags: one line, exit 2
@pytest.mark.parametrize("argv", [
    ["check", "soak", "--duration", "-5"],
    ["check", "soak", "--duration", "nan"],
    ["check", "soak", "--duration", "inf"],
    ["check", "soak", "--duration", "0"],
    ["check", "soak", "--duration", "1e300"],
    ["demo", "--soak", "-1"],
    ["chat", "--soak", "0"],
    ["check", "port", "--port", "70000"],
    ["check", "port", "--port", "0"],
    ["check", "port", "--port", "-1"],
    ["check", "port", "--client-id", "-5"],
    ["check", "all", "--gateway", "nope"],
    ["report", "99999999999999999999999"],
    ["logs", "0"],
    ["simulate", "--port", "70000"],
    ["simctl", "status", "--control-port", "70000"],
    ["bench", "--trials", "0"],
    ["history", "--limit", "0"],
    ["frobnicate"],
    # A flag that overrides a config key passes the key's own rule (the file refuses these too).
    ["check", "soak", "--host", ""],
    ["check", "port", "--host", " "],
    ["check", "port", "--host", "gw host"],
    ["check", "port", "--host", "localhost:4002"],
    ["simulate", "--host", ""],  # '' would listen on every interface
    ["simulate", "--account", "DU 1"],
    ["simctl", "status", "--control-host", ""],
    ["--config", "", "history"],  # not the default config file
    ["report", "1", "--out", ""],
    ["check", "drill"],  # no ibc configured: nothing to send RESTART to
])
def test_a_bad_flag_is_one_line_exit_2_and_nothing_stored(tmp_path, capsys, argv):
    from bot.frontends.cli import main

    code = main(["--config", str(config_file(tmp_path)), *argv])
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("gwbot"), err
    assert "Traceback" not in err
    assert not (tmp_path / "data" / "gwbot.sqlite3").exists(), "nothing stored"


def test_a_report_that_cannot_be_written_is_one_line_exit_2(tmp_path, capsys):
    from bot.frontends.cli import main
    from storage import Repository

    async def stored_run() -> int:
        async with await Repository.open(tmp_path / "data" / "gwbot.sqlite3") as repo:
            return await repo.create_run("soak", "paper", "test", "terminal", {})

    cfg, run_id = config_file(tmp_path), asyncio.run(stored_run())
    out = tmp_path / "missing" / "r.md"
    code = main(["--config", str(cfg), "report", str(run_id), "--out", str(out)])
    assert (code, capsys.readouterr().err) == (2, f"gwbot: cannot write {out}: No such file or directory; give "
                                                  "--out a file in a folder that exists\n")


@pytest.mark.parametrize("argv", [["check", "port", "--simulate"], ["demo", "--soak", "3"]])
def test_a_bad_database_is_the_only_line_a_simulated_run_prints(tmp_path, capsys, argv):
    from bot.frontends.cli import main

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "gwbot.sqlite3").write_bytes(b"not a database")
    code = main(["--config", str(config_file(tmp_path)), *argv])
    out, err = capsys.readouterr()
    assert (code, out) == (2, ""), out
    assert err.startswith("gwbot: ") and "is not a gwbot database" in err and err.count("\n") == 1, err


@pytest.mark.parametrize("folder", ["empty", "missing"])
def test_reading_commands_never_create_the_database(tmp_path, capsys, folder):
    from bot.frontends.cli import main

    data = tmp_path / "data"
    if folder == "empty":
        data.mkdir()
    cfg = str(config_file(tmp_path))
    assert main(["--config", cfg, "history"]) == 0
    assert "No runs yet" in capsys.readouterr().out
    assert main(["--config", cfg, "outbox"]) == 0
    assert "Outbox empty" in capsys.readouterr().out
    for argv in (["logs", "1"], ["report", "1"]):
        assert main(["--config", cfg, *argv]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err == f"gwbot: no run #1: no history yet ({data / 'gwbot.sqlite3'} does not exist; " \
                                     "try gwbot demo)\n", err
    assert main(["--config", cfg, "outbox", "--retry"]) == 0
    assert "Nothing is held" in capsys.readouterr().out
    assert list(data.iterdir()) == [] if folder == "empty" else not data.exists(), "nothing created"


def test_simctl_help_lists_every_command(capsys):
    from bot.frontends.cli import main
    from bot.lab.simctl import COMMANDS

    with pytest.raises(SystemExit) as done:
        main(["simctl", "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    for usage, _, _ in COMMANDS.values():
        assert f"\n  {usage}\n" in out, usage


def test_config_and_verbose_work_after_the_subcommand_too(tmp_path, capsys):
    from bot.frontends.cli import main

    cfg = config_file(tmp_path)
    assert main(["history", "--config", str(cfg), "-v"]) == 0
    assert main(["-v", "history", "--config", str(cfg)]) == 0
    assert main(["--config", str(cfg), "history"]) == 0
    out, _ = capsys.readouterr()
    database = tmp_path / "data" / "gwbot.sqlite3"
    assert out.count(f"Database: {database}") == 3, out


async def test_report_into_a_closed_pipe_exits_quietly(tmp_path):
    from storage import Repository

    cfg = config_file(tmp_path)
    async with await Repository.open(tmp_path / "data" / "gwbot.sqlite3") as repo:
        run_id = await repo.create_run("soak", "paper", "test", "terminal", {})
        await repo.finish_run(run_id, "passed")
    for command in (f"report {run_id}", "history", f"logs {run_id}"):
        # `true` exits at once without reading: every write gwbot makes meets a closed pipe.
        proc = await asyncio.create_subprocess_shell(
            f"{sys.executable} -m bot --config {cfg} {command} | true", cwd=ROOT, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert err.decode() == "", command


async def test_sigterm_stores_a_terminal_check_as_cancelled(tmp_path):
    import signal

    cfg = str(config_file(tmp_path))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--config", cfg, "check", "soak", "--simulate", "--duration", "30", cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        while b"Running soak" not in await asyncio.wait_for(proc.stdout.readline(), 20):
            pass
        await asyncio.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert "Traceback" not in err.decode()
    code, out, _ = await gwbot("--config", cfg, "history")
    assert code == 0 and "cancelled" in out and "running" not in out, out


def test_the_check_names_the_parser_offers_are_the_checklists():
    """The parser names them without importing the checks (a command starts without ib_async)."""
    from bot.checks import CHECK_NAMES
    from bot.frontends.cli import CHECK_CHOICES

    assert CHECK_CHOICES == CHECK_NAMES
