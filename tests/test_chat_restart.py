"""[Restart Gateway] under a 🔴: real PTB over HTTP to the Bot API stand-in, the real simulated Gateway
with IBC's command server beside it (its minute short), a real SQLite file. Nothing is mocked."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.config import IbcAddress, WatchConfig
from bot.lab.chat import lab_chat
from bot.lab.ibc_sim import IbcProfile
from bot.lab.simctl import ControlServer
from bot.lab.telegram_standin import User
from bot.services import with_gateway
from bot.watch.schedule import restart_needs_login
from bot.watch.state import Phase
from tests.conftest import FAST, free_port
from tests.test_chat import KAI, LEE, MALLORY, SQUAD, Chat, chat_config
from tests.test_chat_watch import WATCH_OPTIONS, _until
from tests.test_ibc_sim import early_in_minute


@pytest.fixture
async def restartable(tmp_path):
    """A watched chat whose simulated Gateway runs IBC's command server, configured under ``ibc``."""
    ctl_port = free_port()
    config = with_gateway(replace(chat_config(tmp_path), watch=WatchConfig(
        alert_chat_ids=frozenset({SQUAD}), down_after=0.3, expected=(), relogin_reminder=0, farm_grace=0.3)),
        ibc=IbcAddress(ctl_port, "127.0.0.1"))
    async with lab_chat(config, [User(KAI, "Kai", "kai"), User(LEE, "Lee", "lee")], {SQUAD: "squad"},
                        client_options={"probe_interval": FAST.probe_interval}, watch_options=WATCH_OPTIONS) as lab:
        assert lab.gateway is not None
        lab.standin.user(MALLORY, "Mallory", "mallory")  # in the squad's chat, not on the allow-list
        lab.gateway.ibc.profile = IbcProfile(minute=0.4, down=0.2, ready_after=0.2)
        ctl = ControlServer(lab.gateway, port=ctl_port)
        await ctl.start()
        try:
            await _until(lambda: lab.services.watch.watcher().state.phase is Phase.UP)
            chat = Chat(lab.standin, lab.gateway, lab.services)
            chat.ibc_server = ctl  # so a test can take IBC away
            yield chat
        finally:
            await ctl.stop()


async def _frozen_red(chat: Chat):
    chat.gateway.freeze()
    return await chat.wait(lambda m: m.text.startswith("🔴") and "frozen" in m.text)


def _button(message, label: str) -> str:
    return next(b.data for b in message.button_list if b.text == label)


async def test_restart_from_a_frozen_gateways_red_after_yes_brings_green_saying_who(restartable):
    chat = restartable
    down = await _frozen_red(chat)
    assert [b.text for b in down.button_list] == ["Acknowledge", "Restart Gateway", "Mute 1h"]
    assert all(len(b.data.encode()) <= 64 for b in down.button_list)
    chat.standin.press(SQUAD, LEE, down.message_id, _button(down, "Restart Gateway"))
    ask = await chat.wait(lambda m: m.text.startswith("Restart paper now?"), down.message_id)
    assert ask.text == "Restart paper now? It will be back in about a minute, no 2FA needed."
    assert [b.text for b in ask.button_list] == ["Yes", "No"]
    assert chat.gateway.frozen, "asking restarts nothing"
    await early_in_minute(chat.gateway.ibc.profile.minute)
    chat.standin.press(SQUAD, LEE, ask.message_id, _button(ask, "Yes"))
    await chat.wait(lambda m: m.message_id == ask.message_id and "IBC restarts it at" in m.text
                    and "Asked by @lee" in m.text and not m.button_list, down.message_id - 1)
    edited = await chat.wait(lambda m: m.message_id == down.message_id and "Restarted through IBC by @lee" in m.text,
                             down.message_id - 1)
    assert "Restart Gateway" not in [b.text for b in edited.button_list], "one restart per outage"
    up = await chat.wait(lambda m: m.text.startswith("🟢"), down.message_id, timeout=10)
    assert "restarted by @lee" in up.text
    assert not chat.gateway.frozen
    audit = [(a.username, a.action, a.allowed) for a in await chat.services.repo.list_audit()]
    assert ("@lee", "IBC RESTART paper", True) in audit


async def test_no_leaves_the_gateway_as_it_is(restartable):
    chat = restartable
    down = await _frozen_red(chat)
    chat.standin.press(SQUAD, KAI, down.message_id, _button(down, "Restart Gateway"))
    ask = await chat.wait(lambda m: m.text.startswith("Restart paper now?"), down.message_id)
    chat.standin.press(SQUAD, KAI, ask.message_id, _button(ask, "No"))
    await chat.wait(lambda m: m.message_id == ask.message_id and "Not restarted (@kai said no)" in m.text,
                    down.message_id - 1)
    assert chat.gateway.ibc.pending is None and chat.gateway.frozen
    chat.gateway.unfreeze()


async def test_a_strangers_press_is_refused_and_audited(restartable):
    chat = restartable
    down = await _frozen_red(chat)
    chat.standin.press(SQUAD, MALLORY, down.message_id, _button(down, "Restart Gateway"))
    await _until(lambda: any("may not act" in a.text for a in chat.standin.callback_answers))
    refused = [(a.username, a.action, a.detail) for a in await chat.services.repo.list_audit() if not a.allowed]
    assert refused == [("@mallory", f"button {_button(down, 'Restart Gateway')}", "not on the allow-list")]
    assert not [m for m in chat.standin.messages(SQUAD) if m.text.startswith("Restart paper now?")]
    assert chat.gateway.ibc.pending is None
    chat.gateway.unfreeze()


async def test_refused_with_the_reason_while_a_check_runs(restartable):
    chat = restartable
    down = await _frozen_red(chat)
    started = await chat.ask("/connect", "connect on paper")  # waits on the frozen Gateway's handshake
    chat.standin.press(SQUAD, LEE, down.message_id, _button(down, "Restart Gateway"))
    refusal = await chat.wait(lambda m: m.text.startswith("❌ Not restarted"), started.message_id)
    assert "connect on paper is running (run #1" in refusal.text and "/cancel paper" in refusal.text
    assert chat.gateway.ibc.pending is None
    audit = [(a.action, a.allowed) for a in await chat.services.repo.list_audit()]
    assert ("IBC RESTART paper", False) in audit
    chat.gateway.unfreeze()


async def test_ibc_unreachable_is_one_line_naming_the_address(restartable):
    chat = restartable
    down = await _frozen_red(chat)
    chat.standin.press(SQUAD, LEE, down.message_id, _button(down, "Restart Gateway"))
    ask = await chat.wait(lambda m: m.text.startswith("Restart paper now?"), down.message_id)
    address = f"127.0.0.1:{chat.services.config.gateway().ibc.port}"
    await chat.ibc_server.stop()
    chat.standin.press(SQUAD, LEE, ask.message_id, _button(ask, "Yes"))
    said = await chat.wait(lambda m: m.message_id == ask.message_id and "Not restarted" in m.text, down.message_id - 1)
    line = said.text.splitlines()[-1]
    assert line.startswith(f"❌ Not restarted: IBC at {address}: nothing listens there"), line
    chat.gateway.unfreeze()


async def test_reconnect_data_from_a_broken_farms_yellow(restartable):
    chat = restartable
    await chat.gateway.send_notice(2103)
    warning = await chat.wait(lambda m: m.text.startswith("🟡") and "data farm" in m.text)
    assert [b.text for b in warning.button_list] == ["Reconnect data"]
    assert len(warning.button_list[0].data.encode()) <= 64
    chat.standin.press(SQUAD, LEE, warning.message_id, warning.button_list[0].data)
    ask = await chat.wait(lambda m: m.text.startswith("Reconnect paper's data farms now?"), warning.message_id)
    chat.standin.press(SQUAD, LEE, ask.message_id, _button(ask, "Yes"))
    await chat.wait(lambda m: m.message_id == ask.message_id and "IBC reconnects them. Asked by @lee" in m.text,
                    warning.message_id - 1)
    await chat.wait(lambda m: m.message_id == warning.message_id and "OK again since" in m.text
                    and "reconnected by @lee" in m.text and not m.button_list, warning.message_id - 1)
    audit = [(a.action, a.allowed) for a in await chat.services.repo.list_audit()]
    assert ("IBC RECONNECTDATA paper", True) in audit


def test_a_restart_needs_the_weekly_login_close_before_the_sunday_expiry_and_after_it_until_a_new_session():
    expiry = datetime(2025, 6, 15, 5, 0, tzinfo=UTC)  # Sunday 01:00 New York (EDT)
    week_old = expiry - timedelta(days=3)
    assert restart_needs_login(expiry - timedelta(minutes=5), week_old) == expiry
    assert restart_needs_login(expiry - timedelta(hours=2), week_old) is None
    assert restart_needs_login(expiry + timedelta(hours=3), week_old) == expiry, "the session predates the expiry"
    assert restart_needs_login(expiry + timedelta(hours=3), expiry + timedelta(hours=1)) is None, "logged in since"
    assert restart_needs_login(expiry + timedelta(hours=3), None) == expiry, "unknown: the Sunday itself is refused"
    assert restart_needs_login(expiry + timedelta(days=2), None) is None
