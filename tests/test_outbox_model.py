"""The outbox, model-checked: random interleavings of alerts, their edits, Telegram's failures and
gwbot restarts, with what the outbox promises checked after every step.

The real :class:`Outbox` on a real SQLite file; only Telegram is replaced, by a small far side that
shows what people would see and answers as Telegram does (refused, 5xx, 429, buttons refused, a 400
for one message, an edit whose message is gone), sometimes a little late. Invariants: nothing shown
twice, an edit only ever changes its own alert's message (never another Gateway's, never a digest),
each chat's messages in order, and once Telegram is back every message is shown (alone or in a
digest) or is a dead letter because Telegram refused that very message.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bot.config import OutboxConfig
from bot.outbox import Outbox, Outcome, OutcomeKind
from storage import OutKind, OutMessage, OutStatus, Repository

CHATS = (-100, 42)  # a group and a person
GATEWAYS = ("paper", "g" * 60)
CONFIG = OutboxConfig(digest_after=4, retry_initial=0.005, retry_max=0.02, max_attempts=3, send_timeout=2,
                      chat_interval=0, group_per_minute=10_000, overall_per_second=10_000)
TAG = re.compile(r"#(\d+)")
MODES = ("ok", "refused", "5xx", "429", "buttons refused", "edit gone")


@dataclass
class Shown:
    """A message as people see it in the chat."""

    chat_id: int
    key: str | None  # the alert key of the message that created it (a digest has none)
    texts: list[str]  # its text, then each edit's


@dataclass
class Telegram:
    """The far side of the outbox's Transport."""

    mode: str = "ok"
    latency: float = 0.0  # the message is shown at once, the answer comes this much later
    poisoned: set[int] = field(default_factory=set)  # tags Telegram refuses with a 400, every time
    shown: dict[int, Shown] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)  # found inside the outbox's tasks, asserted by the test

    async def send(self, chat_id: int, message: OutMessage) -> Outcome:
        await asyncio.sleep(0)
        tags = [int(t) for t in TAG.findall(message.text)]
        match self.mode:
            case "refused":
                return Outcome(OutcomeKind.UNREACHABLE, "sendMessage: NetworkError: connection refused")
            case "5xx":
                return Outcome(OutcomeKind.UNREACHABLE, "sendMessage: NetworkError: Bad Gateway")
            case "429":
                return Outcome(OutcomeKind.RETRY_AFTER, "sendMessage: RetryAfter", retry_after=0.01)
            case "buttons refused" if message.buttons:
                return Outcome(OutcomeKind.BAD_BUTTONS, "sendMessage: BadRequest: Button_data_invalid")
            case "edit gone" if message.edit_of is not None:
                return Outcome(OutcomeKind.EDIT_GONE, "editMessageText: BadRequest: Message to edit not found")
        if self.poisoned & set(tags) and len(tags) == 1:
            return Outcome(OutcomeKind.FAILED, "sendMessage: BadRequest: can't parse entities")
        if message.edit_of is not None:
            target = self.shown.get(message.edit_of)
            if target is None or target.chat_id != chat_id or target.key is None or target.key != message.key:
                self.violations.append(f"edit {message.text!r} landed on {target}")
            else:
                target.texts.append(message.text)
            message_id = message.edit_of
        else:
            message_id = len(self.shown) + 1
            self.shown[message_id] = Shown(chat_id, message.key, [message.text])
        await asyncio.sleep(self.latency)  # shown already; the answer is on its way
        return Outcome(OutcomeKind.SENT, message_id=message_id)


class OutboxMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.folder = Path(tempfile.mkdtemp(prefix="gwbot-outbox-model-"))
        self.telegram = Telegram()
        self.ids: dict[int, int] = {}  # each message's tag -> its outbox row
        self.repo: Repository | None = None
        self.outbox: Outbox | None = None
        self.alerted: dict[tuple[int, str], int] = {}  # (chat, gateway) -> outage number with a 🔴 queued

    @initialize(latency=st.sampled_from([0.0, 0.0, 0.01]))
    def start(self, latency: float) -> None:
        self.telegram.latency = latency
        self.repo = self.runner.run(Repository.open(self.folder / "gwbot.sqlite3"))
        self._start_outbox()

    def _start_outbox(self) -> None:
        assert self.repo is not None
        self.outbox = Outbox(self.repo.outbox, CONFIG)
        self.runner.run(self.outbox.load())
        self.runner.run(self.outbox.start(self.telegram))

    def teardown(self) -> None:
        try:
            if self.outbox is not None:
                self.runner.run(self.outbox.stop())
            if self.repo is not None:
                self.runner.run(self.repo.close())
        finally:
            self.runner.close()
            shutil.rmtree(self.folder, ignore_errors=True)

    def _enqueue(self, chat_id: int, message: OutMessage) -> None:
        assert self.outbox is not None
        tag = len(self.ids) + 1
        tagged = replace(message, text=f"#{tag} {message.text}")
        [self.ids[tag]] = self.runner.run(self.outbox.enqueue(chat_id, [tagged]))

    # -------------------------------------------------------------- rules
    @rule(chat_id=st.sampled_from(CHATS), count=st.integers(1, 7))
    def plain_texts(self, chat_id: int, count: int) -> None:
        for n in range(count):
            self._enqueue(chat_id, OutMessage.plain(f"note {n}"))

    @rule(chat_id=st.sampled_from(CHATS), gateway=st.sampled_from(GATEWAYS))
    def gateway_down(self, chat_id: int, gateway: str) -> None:
        outage = self.alerted.get((chat_id, gateway), 0) + 1
        self.alerted[(chat_id, gateway)] = outage
        key = f"down:{gateway}:{outage}"
        buttons = (("Acknowledge", f"ack:{gateway[:8]}{outage}"), ("Mute 1h", f"mute1h:{gateway[:8]}{outage}"))
        self._enqueue(chat_id, OutMessage(OutKind.TEXT, f"🔴 {gateway} is DOWN", buttons=buttons, key=key))

    @rule(chat_id=st.sampled_from(CHATS), gateway=st.sampled_from(GATEWAYS), what=st.sampled_from(["taken", "back"]))
    def alert_edited(self, chat_id: int, gateway: str, what: str) -> None:
        outage = self.alerted.get((chat_id, gateway))
        if outage is None:
            return
        key = f"down:{gateway}:{outage}"
        self._enqueue(chat_id, OutMessage(OutKind.TEXT, f"🔴 {gateway} is DOWN — {what}", key=key, edit=True))

    @rule(mode=st.sampled_from(MODES))
    def telegram_changes(self, mode: str) -> None:
        self.telegram.mode = mode

    @precondition(lambda self: bool(self.ids))
    @rule(data=st.data())
    def telegram_refuses_one_message(self, data: st.DataObject) -> None:
        self.telegram.poisoned.add(data.draw(st.sampled_from(sorted(self.ids))))

    @rule(seconds=st.sampled_from([0.0, 0.01, 0.05]))
    def time_passes(self, seconds: float) -> None:
        self.runner.run(asyncio.sleep(seconds))

    @rule()
    def gwbot_restarts(self) -> None:
        """A graceful restart (SIGTERM, then start): the queue is in SQLite, the senders are new."""
        assert self.outbox is not None
        self.runner.run(self.outbox.stop())
        self._start_outbox()

    @rule()
    def telegram_back_and_everything_delivered(self) -> None:
        assert self.outbox is not None and self.repo is not None
        store = self.repo.outbox
        self.telegram.mode = "ok"
        self.runner.run(self.outbox.delivered(self.ids.values(), timeout=30))
        rows = {tag: self.runner.run(store.get(row_id)) for tag, row_id in self.ids.items()}
        seen = self._seen()
        for tag, row in rows.items():
            assert row is not None and row.status is not OutStatus.PENDING, f"#{tag} still pending"
            if row.status is OutStatus.FAILED:
                assert tag in self.telegram.poisoned, f"#{tag} became a dead letter, yet Telegram never refused it"
            else:
                assert tag in seen, f"#{tag} ({row.status}) was never shown"

    # ---------------------------------------------------------- invariants
    def _seen(self) -> dict[int, list[int]]:
        """Each tag, and the Telegram messages that show it (alone, edited in, or in a digest)."""
        seen: dict[int, list[int]] = {}
        for message_id, shown in self.telegram.shown.items():
            for text in shown.texts:
                for tag in TAG.findall(text):
                    seen.setdefault(int(tag), []).append(message_id)
        return seen

    @invariant()
    def edits_change_only_their_own_alert(self) -> None:
        assert self.telegram.violations == []

    @invariant()
    def nothing_is_shown_twice(self) -> None:
        for tag, where in self._seen().items():
            assert len(where) == 1, f"#{tag} shown {len(where)} times"

    @invariant()
    def each_chat_reads_in_order(self) -> None:
        for chat_id in CHATS:
            firsts = [min(int(t) for t in TAG.findall(s.texts[0]))
                      for s in self.telegram.shown.values() if s.chat_id == chat_id]
            assert firsts == sorted(firsts), f"chat {chat_id} got its messages out of order: {firsts}"

    @invariant()
    def a_digest_is_nobodys_alert(self) -> None:
        for shown in self.telegram.shown.values():
            if shown.texts[0].startswith("📬"):
                assert shown.key is None and len(shown.texts) == 1, "a digest was given a key or edited"


TestOutboxModel = OutboxMachine.TestCase
