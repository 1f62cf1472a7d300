"""Wiring: the one place that builds gwbot's parts from a Config and hands them out.

The chat front end lives in ``handlers`` (which imports bot, never the reverse); it is found
through the ``gwbot.frontends`` entry point that pyproject.toml declares, so the dependency
arrow stays handlers -> bot while this module still starts the whole program.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

from telegram import Bot, Update
from telegram.error import InvalidToken, NetworkError
from telegram.ext import Application, ApplicationBuilder, BaseUpdateProcessor

from bot.config import Config, GatewayConfig, OutboxConfig
from bot.health import LiveView
from bot.jobs import JobBoard
from bot.outbox import Outbox, Transport
from bot.runner import Runner
from bot.selfcheck import ping_forever
from storage import Repository

log = logging.getLogger(__name__)
DB_NAME = "gwbot.sqlite3"
FRONTENDS = "gwbot.frontends"
TELEGRAM_API = "https://api.telegram.org/bot"
POLL_TIMEOUT = 10  # seconds a getUpdates long poll may wait
MAX_CONCURRENT_UPDATES = 64


def database_path(config: Config) -> Path:
    return config.data_dir / DB_NAME


def with_gateway(config: Config, name: str | None = None, **changes: Any) -> Config:
    """The config with one Gateway's settings changed (the CLI's --host/--port, the demo's simulator)."""
    target = config.gateway(name)
    changed: GatewayConfig = replace(target, **{k: v for k, v in changes.items() if v is not None})
    return replace(config, gateways=tuple(changed if g is target else g for g in config.gateways))


@dataclass(frozen=True)
class Services:
    config: Config
    repo: Repository
    runner: Runner
    jobs: JobBoard
    outbox: Outbox  # messages that must arrive; sending starts when the chat front end has a Bot
    # One view per Gateway, kept current by the running check's events.
    live: dict[str, LiveView] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def open_services(config: Config, client_options: dict[str, Any] | None = None) -> AsyncIterator[Services]:
    repo = await Repository.open(database_path(config))
    runner = Runner(config, repo, dict(client_options or {}))
    jobs = JobBoard(runner)
    outbox = Outbox(repo.outbox, config.outbox)
    try:
        await outbox.load()
        yield Services(config, repo, runner, jobs, outbox, {g.name: LiveView() for g in config.gateways})
    finally:
        await jobs.shutdown()  # a running check is cancelled and stored as cancelled
        await outbox.stop()  # what is unsent stays stored for the next start
        await repo.close()


class Frontend(Protocol):
    """What a chat front end (the ``handlers`` package) provides."""

    def install(self, application: Application, services: Services) -> None: ...

    async def started(self, application: Application) -> None: ...

    def transport(self, bot: Bot, config: OutboxConfig) -> Transport: ...


def load_frontend(name: str = "telegram") -> Frontend:
    found = entry_points(group=FRONTENDS, name=name)
    if not found:
        raise RuntimeError(f"no '{name}' chat front end is installed (entry point group {FRONTENDS}); "
                           "reinstall gwbot with: pip install -e .")
    return next(iter(found)).load()


OrderKey = tuple[int | None, int | None, bool]  # chat, person, button press


def order_key(update: object) -> OrderKey:
    """Updates with the same key are handled in the order they came: one person's commands in one
    chat. Button presses go apart from commands, so a Done never waits behind a slow /status."""
    if not isinstance(update, Update):
        return None, None, False
    chat, user = update.effective_chat, update.effective_user
    return (chat.id if chat else None), (user.id if user else None), update.callback_query is not None


class PerPersonUpdateProcessor(BaseUpdateProcessor):
    """Each person's updates in a chat in the order they came; everyone else's at the same time.

    So a slow command (a /status probing a frozen Gateway) holds up only the one who sent it. PTB
    starts one task per update in arrival order, and asyncio.Lock lets waiters in first come, first served.
    """

    def __init__(self, max_concurrent_updates: int = MAX_CONCURRENT_UPDATES) -> None:
        super().__init__(max_concurrent_updates)
        self._queues: dict[OrderKey, tuple[asyncio.Lock, int]] = {}  # lock, updates holding or waiting it

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        key = order_key(update)
        lock, users = self._queues.get(key, (asyncio.Lock(), 0))
        self._queues[key] = (lock, users + 1)
        try:
            async with lock:
                await coroutine
        finally:
            lock, users = self._queues[key]
            if users == 1:
                del self._queues[key]  # no lock kept for someone who has gone quiet
            else:
                self._queues[key] = (lock, users - 1)

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None


class TokenRejected(Exception):
    pass


async def run_chat(services: Services, token: str, stop: asyncio.Event, *, base_url: str | None = None,
                   poll_timeout: float = POLL_TIMEOUT) -> None:
    """python-telegram-bot inside our own loop (not run_polling's), until ``stop`` is set."""
    application = (ApplicationBuilder().token(token).base_url(base_url or TELEGRAM_API)
                   .get_updates_read_timeout(poll_timeout + 5).concurrent_updates(PerPersonUpdateProcessor()).build())
    frontend = load_frontend()
    frontend.install(application, services)
    try:
        await application.initialize()
    except InvalidToken as e:
        raise TokenRejected("Telegram rejected the bot token (TELEGRAM_BOT_TOKEN): create one with @BotFather") from e
    except NetworkError as e:
        raise TokenRejected(f"cannot reach the Telegram Bot API at {base_url or TELEGRAM_API}: {e}") from e
    selfcheck: asyncio.Task[None] | None = None
    try:
        await frontend.started(application)
        await services.outbox.start(frontend.transport(application.bot, services.config.outbox))
        selfcheck = asyncio.create_task(ping_forever(services.config.selfcheck, services.outbox))
        await application.start()
        assert application.updater is not None
        await application.updater.start_polling(poll_interval=0, timeout=int(poll_timeout), drop_pending_updates=False)
        log.info("chat bot @%s is polling", application.bot.username)
        await stop.wait()
    finally:
        log.info("chat bot stopping")
        if application.updater is not None and application.updater.running:
            await application.updater.stop()
        await services.jobs.shutdown()
        if selfcheck is not None:
            selfcheck.cancel()
            await asyncio.gather(selfcheck, return_exceptions=True)
        await services.outbox.stop()  # before the Bot closes; unsent messages wait in the database
        if application.running:
            await application.stop()
        await application.shutdown()
