"""An alert's buttons work whatever the Gateway is called: real PTB over HTTP to the Bot API
stand-in (which refuses callback data over 64 bytes, as Telegram does), the real simulated Gateway."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.config import WatchConfig
from bot.lab.chat import lab_chat
from bot.lab.telegram_standin import User
from bot.watch.state import Phase
from tests.conftest import FAST
from tests.test_chat import KAI, LEE, SQUAD, Chat, chat_config
from tests.test_chat_watch import WATCH_OPTIONS, _until

LONG_NAME = "paper-gateway-of-the-north-american-squad-on-the-spare-host1"  # 60 characters


@pytest.fixture
async def long_named(tmp_path):
    config = chat_config(tmp_path)
    config = replace(config, gateways=(replace(config.gateway(), name=LONG_NAME),),
                     watch=WatchConfig(alert_chat_ids=frozenset({SQUAD}), down_after=0.3, expected=(),
                                       relogin_reminder=0))
    async with lab_chat(config, [User(KAI, "Kai", "kai"), User(LEE, "Lee", "lee")], {SQUAD: "squad"},
                        client_options={"probe_interval": FAST.probe_interval}, watch_options=WATCH_OPTIONS) as lab:
        await _until(lambda: lab.services.watch.watcher().state.phase is Phase.UP)
        yield Chat(lab.standin, lab.gateway, lab.services)


async def test_a_60_character_gateways_red_arrives_with_working_buttons(long_named):
    chat = long_named
    assert len(LONG_NAME) == 60
    await chat.gateway.stop()
    down = await chat.wait(lambda m: m.text.startswith("🔴"))
    assert LONG_NAME in down.text and [b.text for b in down.button_list] == ["Acknowledge", "Mute 1h"]
    assert all(len(b.data.encode()) <= 64 for b in down.button_list)
    chat.standin.press(SQUAD, LEE, down.message_id, down.button_list[0].data)
    await chat.wait(lambda m: m.message_id == down.message_id and m.edits >= 1 and "lee" in m.text)
    chat.standin.press(SQUAD, KAI, down.message_id, down.button_list[1].data)
    await _until(lambda: any(f"Alerts for {LONG_NAME} muted for 1 h" in a.text
                             for a in chat.standin.callback_answers))
    assert chat.services.watch.watcher().engine.muted_until is not None


async def test_a_button_nobody_watches_is_answered_plainly(long_named):
    chat = long_named
    await chat.gateway.stop()
    down = await chat.wait(lambda m: m.text.startswith("🔴"))
    chat.standin.press(SQUAD, LEE, down.message_id, "ack:AAAAAAAAAAA")
    await _until(lambda: any("not watched here" in a.text for a in chat.standin.callback_answers))
