"""`gwbot run` as a process: token handling, and SIGTERM mid-check stores the run as cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from bot.lab.simulator import SimulatedGateway
from bot.lab.telegram_standin import BotApiStandIn, BotMessage
from storage import Repository

ROOT = Path(__file__).resolve().parents[1]
SQUAD, KAI = -100, 42
TOKEN = "110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"  # Telegram's shape; gwbot refuses others locally


def config(tmp_path: Path, base_url: str, port: int = 4002) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"""
ibkr: {{port: {port}, reconnect_delay: 0.5, heartbeat_interval: 1, heartbeat_timeout: 1}}
telegram: {{allowed_chat_ids: [{SQUAD}], allowed_user_ids: [{KAI}], api_base_url: "{base_url}"}}
data_dir: data
soak: {{heartbeat_interval: 1, progress_interval: 1}}
""", encoding="utf-8")
    return path


async def start(cfg: Path, token: str | None, *flags: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if k != "TELEGRAM_BOT_TOKEN"}
    if token:
        env["TELEGRAM_BOT_TOKEN"] = token
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "--config", str(cfg), "run", *flags,
                                                cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)


async def test_missing_token_is_one_line(tmp_path):
    proc = await start(config(tmp_path, "http://127.0.0.1:1/bot"), None)
    _out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert err.decode().strip().splitlines() == [
        "gwbot: set TELEGRAM_BOT_TOKEN to your bot's token (from @BotFather); see README"]


async def test_rejected_token_is_one_line(tmp_path):
    async with BotApiStandIn() as standin:
        proc = await start(config(tmp_path, standin.base_url), "999:" + "x" * 35)
        _out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert lines[-1] == "gwbot: Telegram rejected the bot token (TELEGRAM_BOT_TOKEN): create one with @BotFather"
    assert "Traceback" not in err.decode()


async def sigterm_after(tmp_path: Path, gw: SimulatedGateway, standin: BotApiStandIn, command: str,
                        answered: Callable[[BotMessage], bool], *flags: str) -> tuple[int, bytes, bytes]:
    """`gwbot run` against the stand-in: send ``command`` once it polls, SIGTERM once ``answered``."""
    standin.user(KAI, "Kai", "kai")
    standin.group(SQUAD, "squad")
    proc = await start(config(tmp_path, standin.base_url, gw.port), standin.token, *flags)
    try:
        for _ in range(200):
            if standin.commands:
                break
            await asyncio.sleep(0.05)
        standin.send_text(SQUAD, KAI, command)
        await standin.wait_for(answered, SQUAD, 20)
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
    return proc.returncode, out, err


async def test_sigterm_mid_soak_cancels_the_run_and_exits_cleanly(tmp_path):
    async with SimulatedGateway(port=0) as gw, BotApiStandIn(token=TOKEN) as standin:
        code, _, err = await sigterm_after(tmp_path, gw, standin, "/soak 5", lambda m: m.text.startswith("⏳ soak"))
        assert code == 0, err.decode()
        assert not [c for c in gw.clients if c.ready], "sockets closed"
    async with await Repository.open(tmp_path / "data" / "gwbot.sqlite3") as repo:
        run = await repo.get_run(1)
    assert run.status == "cancelled" and run.checks[0].status == "cancelled"


@contextlib.asynccontextmanager
async def gwbot_chat(tmp_path: Path, config_text: str = "data_dir: data\n",
                     *chat_args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """`gwbot chat` in its own process, typed at through a pipe; Ctrl-C at the end must stop it cleanly."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(config_text, encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "--config", str(cfg), "chat", *chat_args,
                                                cwd=ROOT,
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        yield proc
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    assert "Traceback" not in (await proc.stderr.read()).decode()


async def test_ctrl_c_ends_gwbot_chat_while_it_waits_for_input(tmp_path):
    async with gwbot_chat(tmp_path) as proc:
        proc.stdin.write(b"/help\n")  # the pipe stays open: the chat is waiting for the next line
        await proc.stdin.drain()
        async with asyncio.timeout(30):
            while b"/checklist - the whole" not in (line := await proc.stdout.readline()):
                assert line, "gwbot chat ended early"


async def test_a_local_typo_in_gwbot_chat_is_one_line_and_the_chat_reads_on(tmp_path):
    async with gwbot_chat(tmp_path) as proc:
        proc.stdin.write("!notice ²\n!slow 1,2 5\n!status\n".encode())
        await proc.stdin.drain()
        answers = []
        async with asyncio.timeout(30):
            while not (line := await proc.stdout.readline()).startswith(b"local: OK running"):
                assert line, f"gwbot chat ended early after {answers}"
                answers += [line.decode()] if line.startswith(b"local: ") else []
        assert [a.split(":")[1].strip() for a in answers] == ["ERROR notice", "ERROR slow"], answers
