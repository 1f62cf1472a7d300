"""The composition root: the one module that builds all of gwbot and may import both bot and handlers.

As python-telegram-bot's own examples do in main(): one ``AsyncExitStack`` starts the parts in
order and stops them in reverse. Everywhere else imports run handlers -> bot -> storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from telegram import Update
from telegram.error import InvalidToken, NetworkError, TelegramError
from telegram.ext import Application, ApplicationBuilder, BaseUpdateProcessor

import handlers
from bot.config import Config
from bot.drill_schedule import scheduled_drills
from bot.sdnotify import notifying_systemd
from bot.selfcheck import ping_forever
from bot.services import Services, database_path, gateway_jobs, outbox
from bot.watch.delivery import watching
from handlers.delivery import TelegramTransport
from handlers.results import post_results
from storage import Repository

log = logging.getLogger(__name__)
TELEGRAM_API = "https://api.telegram.org/bot"
POLL_TIMEOUT = 10  # seconds a getUpdates long poll may wait
MAX_CONCURRENT_UPDATES = 64  # updates handled at once (each person's one at a time)
UNBOUNDED = 2**31  # PTB's own limit, kept out of the way (see PerPersonUpdateProcessor)


OrderKey = tuple[int | None, int | None, bool]  # chat, person, button press


class PerPersonUpdateProcessor(BaseUpdateProcessor):
    """Each person's updates in a chat in the order they came; everyone else's at the same time.

    So a slow command (a /status probing a frozen Gateway) holds up only the one who sent it. PTB
    starts one task per update in arrival order, and asyncio.Lock lets waiters in first come, first served.
    """

    def __init__(self, max_concurrent: int = MAX_CONCURRENT_UPDATES) -> None:
        # PTB's process_update takes one of its slots before do_process_update runs, so an update
        # waiting for its sender's earlier ones would sit on a slot, and a few dozen queued behind a
        # slow /status would leave none for anyone else. PTB's limit is set out of reach (it only
        # makes PTB start a task per update), and the slot is taken here, once the person's turn has come.
        super().__init__(UNBOUNDED)
        self._slots = asyncio.Semaphore(max_concurrent)
        self._locks: dict[OrderKey, asyncio.Lock] = {}
        self._users: Counter[OrderKey] = Counter()  # updates holding or waiting for each lock

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        # One person's commands in one chat go in the order they came. Button presses go apart from
        # commands, so a Done never waits behind a slow /status.
        key: OrderKey = (None, None, False)
        if isinstance(update, Update):
            chat, user = update.effective_chat, update.effective_user
            key = (chat.id if chat else None), (user.id if user else None), update.callback_query is not None
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] += 1
        try:
            async with lock, self._slots:
                await coroutine
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]  # no lock kept for someone who has gone quiet

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None


class TokenRejected(Exception):
    """The Bot API refused the token, or cannot be reached; the message is the one line shown."""


@contextlib.asynccontextmanager
async def _telegram_bot(token: str, base_url: str | None, poll_timeout: float) -> AsyncIterator[Application]:
    """The bot's connection to the Bot API (its HTTP client), not yet taking updates."""
    application = (ApplicationBuilder().token(token).base_url(base_url or TELEGRAM_API)
                   .get_updates_read_timeout(poll_timeout + 5).concurrent_updates(PerPersonUpdateProcessor()).build())
    try:
        await application.initialize()
    except InvalidToken as e:
        raise TokenRejected("Telegram rejected the bot token (TELEGRAM_BOT_TOKEN): create one with @BotFather") from e
    except NetworkError as e:
        raise TokenRejected(f"cannot reach the Telegram Bot API at {base_url or TELEGRAM_API}: {e}") from e
    try:
        yield application
    finally:
        await application.shutdown()


def _polling_failed(error: TelegramError) -> None:
    """PTB retries polling by itself; its default logs a traceback per failed poll, at ERROR."""
    log.warning("polling Telegram for updates failed (%s); PTB retries", error)


@contextlib.asynccontextmanager
async def _chat_front_end(application: Application, services: Services, poll_timeout: float) -> AsyncIterator[None]:
    """The handlers, taking updates: the first part to stop, so no command starts while the rest stops."""
    await handlers.install(application, services)
    await application.start()
    try:
        assert application.updater is not None
        await application.updater.start_polling(poll_interval=0, timeout=int(poll_timeout), drop_pending_updates=False,
                                                error_callback=_polling_failed)
        log.info("chat bot @%s is polling", application.bot.username)
        yield
    finally:
        log.info("chat bot stopping")
        if application.updater is not None and application.updater.running:
            await application.updater.stop()
        await application.stop()


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@contextlib.asynccontextmanager
async def serving_chat(config: Config, token: str, *, base_url: str | None = None, poll_timeout: float = POLL_TIMEOUT,
                       client_options: dict[str, Any] | None = None,
                       watch_options: dict[str, Any] | None = None,
                       schedule_options: dict[str, Any] | None = None) -> AsyncIterator[Services]:
    """All of gwbot with its chat front end; one step per part, each stopped in reverse.

    Start: storage, the Bot API connection, the outbox (sending through that Bot), the watch
    (``watch_options``: watcher options, {} for the defaults; None: no watch), the Gateway jobs,
    the scheduled drills (``schedule_options``: the scheduler's, e.g. its timer), the selfcheck,
    polling, then systemd's notifications (when it asked for them). So a check cancelled at
    shutdown still posts its last messages: the jobs stop before the outbox, and the outbox
    before the Bot's connection closes.
    """
    async with contextlib.AsyncExitStack() as stack:
        repo = await stack.enter_async_context(await Repository.open(database_path(config)))
        application = await stack.enter_async_context(_telegram_bot(token, base_url, poll_timeout))
        box = await stack.enter_async_context(outbox(config, repo))
        # The outbox sends through this Bot; its step (entered after the Bot's) stops it before the
        # Bot's connection closes, and what is unsent waits in the database.
        await box.start(TelegramTransport(application.bot, config.outbox.send_timeout))
        watcher = None if watch_options is None else await stack.enter_async_context(
            watching(config, repo, box, client_options=client_options, **watch_options))
        services = await stack.enter_async_context(gateway_jobs(config, repo, box, watcher, client_options))
        await stack.enter_async_context(scheduled_drills(services, post_results, **(schedule_options or {})))
        # The dead man's switch pings while the bot runs (nothing without selfcheck.ping_url).
        stack.push_async_callback(_stop, asyncio.create_task(ping_forever(config.selfcheck, box), name="selfcheck"))
        await stack.enter_async_context(_chat_front_end(application, services, poll_timeout))
        # Start-up's objects (modules, config, the watch's clients) out of later full collections,
        # which took 60-80 ms here and stalled every chat answer and alert meanwhile; the lab and the
        # bench serve the chat here too, so they measure what `gwbot run` does.
        gc.collect()
        gc.freeze()
        stack.callback(gc.unfreeze)
        # Last in, first out: READY=1 once all of the above is up, STOPPING=1 as the stop begins.
        # The watchdog's "stuck outbox" is the dead man's switch's (selfcheck.every).
        await stack.enter_async_context(notifying_systemd(box, config.selfcheck.every))
        yield services


async def run_chat(config: Config, token: str, stop: asyncio.Event) -> None:
    """`gwbot run`: python-telegram-bot inside our own loop (not run_polling's), with the watch,
    until ``stop`` is set."""
    async with serving_chat(config, token, base_url=config.telegram.api_base_url, watch_options={}):
        await stop.wait()
