"""The bot token is a secret: refused locally when malformed, and never in any log output."""

from __future__ import annotations

import asyncio
import sqlite3

from bot.lab.simulator import SimulatedGateway
from bot.lab.telegram_standin import BotApiStandIn
from tests.test_run import config, sigterm_after, start

SECRET = "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
TOKEN = f"110201543:{SECRET}"


async def test_a_malformed_token_is_refused_before_any_network_call(tmp_path):
    async with BotApiStandIn() as standin:
        proc = await start(config(tmp_path, standin.base_url), "not-a-token")
        _out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert not standin.commands, "no request reached the Bot API"
    assert proc.returncode == 2
    assert err.decode().strip().splitlines() == [
        "gwbot: TELEGRAM_BOT_TOKEN does not look like a bot token (digits:letters, like 123456789:AAH...); "
        "copy it again from @BotFather"]


async def test_the_token_is_in_no_log_line_terminal_or_journal(tmp_path):
    async with SimulatedGateway(port=0) as gw, BotApiStandIn(token=TOKEN) as standin:
        _, out, err = await sigterm_after(tmp_path, gw, standin, "/connect", lambda m: "connect: passed" in m.text,
                                          "-v")
    assert "Set Bot API URL" in err.decode(), "the PTB debug line that used to carry the token is there"
    assert SECRET not in out.decode() + err.decode()
    with sqlite3.connect(tmp_path / "data" / "gwbot.sqlite3") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        rows = [str(row) for t in tables for row in db.execute(f"SELECT * FROM {t}")]
    assert any("connect" in r for r in rows), "the journal was written"
    assert not [r for r in rows if SECRET in r]
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
