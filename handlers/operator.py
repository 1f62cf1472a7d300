"""The guided manual steps in chat: a message with [Done] [Abort] that the check waits on.

The check also watches for the event itself and cancels the question when it sees it first;
the message then says so and loses its buttons, so nobody presses a stale button.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from dataclasses import dataclass, field

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import TelegramError

from bot.checks.base import OperatorAction, OperatorReply, OperatorStep, OperatorUnreachable, Reply
from bot.ibkr.events import ClientEvent
from handlers.telegram_html import MESSAGE_LIMIT, fit_message

log = logging.getLogger(__name__)
PREFIX = "op"


@dataclass
class Prompt:
    id: int
    chat_id: int
    gateway: str
    withdrawn: str | None = None  # why the question ended without an answer, when someone ended it
    answer: asyncio.Future[OperatorReply] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class PromptBoard:
    """Open operator questions, by the id their buttons carry."""

    def __init__(self) -> None:
        self._open: dict[int, Prompt] = {}
        self._ids = itertools.count(1)

    def open(self, chat_id: int, gateway: str) -> Prompt:
        prompt = Prompt(next(self._ids), chat_id, gateway)
        self._open[prompt.id] = prompt
        return prompt

    def close(self, prompt: Prompt) -> None:
        self._open.pop(prompt.id, None)

    def withdraw(self, gateway: str, why: str) -> None:
        """Say why the open questions of a Gateway's run are about to end (the run is being cancelled)."""
        for prompt in self._open.values():
            if prompt.gateway == gateway:
                prompt.withdrawn = why

    def answer(self, prompt_id: int, chat_id: int, reply: OperatorReply) -> bool:
        """Resolve a question; False when it is over already (or belongs to another chat)."""
        prompt = self._open.get(prompt_id)
        if prompt is None or prompt.chat_id != chat_id or prompt.answer.done():
            return False
        prompt.answer.set_result(reply)
        return True


class ChatOperator:
    """The squad, in one chat, as the checks' Operator."""

    def __init__(self, bot: Bot, chat_id: int, board: PromptBoard, gateway: str) -> None:
        self.bot = bot
        self.chat_id = chat_id
        self.board = board
        self.gateway = gateway

    async def tell(self, text: str) -> None:
        try:
            await self.bot.send_message(self.chat_id, fit_message(text))
        except TelegramError as e:  # news, not a question: the check goes on without it
            log.warning("could not tell chat %s: %s (%s)", self.chat_id, text, e)

    def on_event(self, event: ClientEvent) -> None:
        """The check gave up waiting: the question's edit must say so, not that the bot saw it happen."""
        if isinstance(event, OperatorStep) and event.outcome == "timeout":
            self.board.withdraw(self.gateway, "Nobody answered in time; I stopped waiting.")

    async def ask(self, action: OperatorAction, text: str) -> OperatorReply:
        prompt = self.board.open(self.chat_id, self.gateway)
        icon = "🛑" if action is OperatorAction.STOP_GATEWAY else "▶️"
        buttons = InlineKeyboardMarkup([[InlineKeyboardButton(label, callback_data=f"{PREFIX}:{prompt.id}:{reply}")
                                         for label, reply in (("✅ Done", Reply.DONE), ("✋ Abort", Reply.ABORT))]])
        text = fit_message(text, MESSAGE_LIMIT - 300)  # room for the icon and, later, the outcome line
        try:
            message = await self.bot.send_message(self.chat_id, f"{icon} {text}", reply_markup=buttons)
        except BaseException as e:
            self.board.close(prompt)  # never shown (or the check ended meanwhile): not open for anyone
            if not isinstance(e, TelegramError):
                raise
            what = "stop" if action is OperatorAction.STOP_GATEWAY else "start"
            raise OperatorUnreachable(f"Could not ask the operator to {what} the Gateway: Telegram answered "
                                      f"{type(e).__name__}: {e}") from e
        outcome = "I saw it happen myself; moving on."
        try:
            reply = await prompt.answer
            outcome = f"{'Done' if reply.reply is Reply.DONE else 'Aborted'} by {reply.by}."
            return reply
        except asyncio.CancelledError:
            # Cancelled either by the check (it saw the event first) or with the run (/cancel).
            outcome = prompt.withdrawn or outcome
            raise
        finally:
            self.board.close(prompt)
            with contextlib.suppress(TelegramError):  # the buttons must go even on the way out
                await asyncio.shield(self.bot.edit_message_text(f"{icon} {text}\n{outcome}", self.chat_id,
                                                                message.message_id))
