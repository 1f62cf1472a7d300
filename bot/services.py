"""The core's parts for one Config, and the lifespan steps that open and close them.

A front end enters these steps on its own ``contextlib.AsyncExitStack`` (bot/app.py for the chat,
``open_services`` for the terminal), so everything stops in the reverse of the order it started.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bot.config import Config, GatewayConfig
from bot.jobs import JobBoard
from bot.outbox import Outbox
from bot.runner import Runner
from bot.watch.watcher import Watch
from storage import Repository

DB_NAME = "gwbot.sqlite3"


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
    jobs: JobBoard
    outbox: Outbox  # messages that must arrive; sending starts when the chat front end has a Bot
    watch: Watch | None = None  # the always-on watch (gwbot run / chat); None in one-shot commands


@contextlib.asynccontextmanager
async def outbox(config: Config, repo: Repository) -> AsyncIterator[Outbox]:
    """The durable outbox, its stored messages loaded; sending starts only when a front end has a Bot."""
    box = Outbox(repo.outbox, config.outbox)
    await box.load()
    try:
        yield box
    finally:
        await box.stop()  # what is unsent stays stored for the next start


@contextlib.asynccontextmanager
async def gateway_jobs(config: Config, repo: Repository, box: Outbox, watcher: Watch | None = None,
                       client_options: dict[str, Any] | None = None) -> AsyncIterator[Services]:
    jobs = JobBoard(Runner(config, repo, dict(client_options or {})))
    try:
        yield Services(config, repo, jobs, box, watcher)
    finally:
        await jobs.shutdown()  # a running check is cancelled and stored as cancelled


@contextlib.asynccontextmanager
async def open_services(config: Config) -> AsyncIterator[Services]:
    """The core without a chat: storage, the outbox (not sending), then the Gateway jobs; closed in reverse."""
    async with contextlib.AsyncExitStack() as stack:
        repo = await stack.enter_async_context(await Repository.open(database_path(config)))
        box = await stack.enter_async_context(outbox(config, repo))
        yield await stack.enter_async_context(gateway_jobs(config, repo, box))
