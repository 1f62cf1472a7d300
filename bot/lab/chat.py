"""The whole bot in the lab: a simulated Gateway, the Bot API stand-in, and gwbot between them.

One set-up for `gwbot chat`, `gwbot bench` and the chat tests: the config points at the simulated
Gateway and allows exactly the people and group chats the stand-in is given.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from bot.app import serving_chat
from bot.config import Config
from bot.lab.simulator import SimulatedGateway
from bot.lab.telegram_standin import BotApiStandIn, User
from bot.services import Services, with_gateway


@dataclass(frozen=True)
class LabChat:
    gateway: SimulatedGateway | None  # None: attached to a Gateway running elsewhere
    standin: BotApiStandIn
    config: Config  # as the bot runs it: pointed at the simulated Gateway, allow-listed
    services: Services


@contextlib.asynccontextmanager
async def lab_chat(config: Config, people: Iterable[User], groups: Mapping[int, str] | None = None, *,
                   client_options: dict[str, Any] | None = None,
                   watch_options: dict[str, Any] | None = None,
                   schedule_options: dict[str, Any] | None = None,
                   attach_port: int | None = None) -> AsyncIterator[LabChat]:
    """gwbot chatting through the stand-in, about a simulated Gateway, until the context ends.

    ``people`` may use the bot, in ``groups`` (chat id -> title) and in their private chats; add
    strangers to ``standin`` afterwards. The first Gateway of ``config`` is the simulated one.
    ``watch_options``: run the watch with these watcher options ({} for the defaults); None: no watch.
    ``schedule_options``: the drill scheduler's (its timer).
    ``attach_port``: talk to a Gateway already listening on 127.0.0.1:PORT (a `gwbot simulate` in
    another terminal) instead of starting one.
    """
    people, groups = tuple(people), dict(groups or {})
    async with contextlib.AsyncExitStack() as stack:
        gateway = None if attach_port else await stack.enter_async_context(
            SimulatedGateway(port=0, accounts=(config.gateway().account,)))
        standin = await stack.enter_async_context(BotApiStandIn())
        for person in people:
            standin.user(person.id, person.first_name, person.username)
        for chat_id, title in groups.items():
            standin.group(chat_id, title)
        config = with_gateway(config, host="127.0.0.1", port=gateway.port if gateway else attach_port)
        config = replace(config, telegram=replace(config.telegram, allowed_chat_ids=frozenset(groups),
                                                  allowed_user_ids=frozenset(p.id for p in people)))
        async with serving_chat(config, standin.token, base_url=standin.base_url, poll_timeout=1,
                                client_options=client_options, watch_options=watch_options,
                                schedule_options=schedule_options) as services:
            yield LabChat(gateway, standin, config, services)
