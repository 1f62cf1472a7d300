"""An alert's buttons work whatever the Gateway is called: real PTB over HTTP to the Bot API
stand-in (which refuses callback data over 64 bytes, as Telegram does), the real simulated Gateway."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import pytest

from bot.config import WatchConfig
from bot.lab.chat import lab_chat
from bot.lab.simulator import SimulatedGateway
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


async def test_eleven_gateways_down_while_telegram_is_away_become_a_plain_digest_and_acks_edit_their_own(tmp_path):
    """The digest after an outage carries no Gateway's buttons, key or edit flag: acknowledging the
    first folded Gateway afterwards must not turn the digest into its 🔴."""
    async with contextlib.AsyncExitStack() as stack:
        sims = [await stack.enter_async_context(SimulatedGateway(port=0)) for _ in range(11)]
        config = chat_config(tmp_path)
        base = config.gateway()
        config = replace(config, gateways=tuple(replace(base, name=f"gw{i}", port=g.port, client_id=1 + 10 * i)
                                                for i, g in enumerate(sims)),
                         watch=WatchConfig(alert_chat_ids=frozenset({SQUAD}), down_after=0.3, expected=(),
                                           relogin_reminder=0),
                         outbox=replace(config.outbox, retry_initial=0.2, retry_max=0.5))
        lab = await stack.enter_async_context(lab_chat(
            config, [User(KAI, "Kai", "kai"), User(LEE, "Lee", "lee")], {SQUAD: "squad"}, attach_port=sims[0].port,
            client_options={"probe_interval": FAST.probe_interval}, watch_options=WATCH_OPTIONS))
        watch = lab.services.watch
        await _until(lambda: all(w.state.phase is Phase.UP for w in watch.watchers.values()), timeout=30)
        await lab.standin.refuse_connections()
        for sim in sims:
            await sim.stop()
        await _until(lambda: all(w.engine.incident is not None and w.engine.incident.alerted_at is not None
                                 for w in watch.watchers.values()), timeout=15)
        await lab.standin.accept_connections()
        digest = await lab.standin.wait_for(lambda m: "📬" in m.text, SQUAD, timeout=20)
        assert digest.button_list == [], "a digest is nobody's alert: no [Acknowledge], no [Mute 1h]"
        first = watch.watcher("gw0").engine.incident
        assert watch.acknowledge(first.key, "lee")
        taken = await lab.standin.wait_for(lambda m: "gw0" in m.text and "Taken by lee" in m.text, SQUAD)
        assert taken.message_id != digest.message_id
        now = next(m for m in lab.standin.messages(SQUAD) if m.message_id == digest.message_id)
        assert now.edits == 0 and now.text == digest.text, "the digest is left as it was"
