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
from bot.runner import Runner
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
    runner: Runner
    jobs: JobBoard


@contextlib.asynccontextmanager
async def storage(config: Config) -> AsyncIterator[Repository]:
    repo = await Repository.open(database_path(config))
    try:
        yield repo
    finally:
        await repo.close()


@contextlib.asynccontextmanager
async def gateway_jobs(config: Config, repo: Repository,
                       client_options: dict[str, Any] | None = None) -> AsyncIterator[Services]:
    jobs = JobBoard(Runner(config, repo, dict(client_options or {})))
    try:
        yield Services(config, repo, jobs.runner, jobs)
    finally:
        await jobs.shutdown()  # a running check is cancelled and stored as cancelled


@contextlib.asynccontextmanager
async def open_services(config: Config, client_options: dict[str, Any] | None = None) -> AsyncIterator[Services]:
    """The core without a chat: storage, then the Gateway jobs; closed in reverse."""
    async with contextlib.AsyncExitStack() as stack:
        repo = await stack.enter_async_context(storage(config))
        yield await stack.enter_async_context(gateway_jobs(config, repo, client_options))
