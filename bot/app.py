"""Wiring: the one place that builds gwbot's parts from a Config and hands them out."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bot.config import Config, GatewayConfig
from bot.runner import Runner
from storage import Repository

log = logging.getLogger(__name__)
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


@contextlib.asynccontextmanager
async def open_services(config: Config, client_options: dict[str, Any] | None = None) -> AsyncIterator[Services]:
    repo = await Repository.open(database_path(config))
    if repo.recovered_runs:
        log.warning("runs %s were still running when gwbot last stopped: marked interrupted",
                    ", ".join(map(str, repo.recovered_runs)))
    try:
        yield Services(config, repo, Runner(config, repo, dict(client_options or {})))
    finally:
        await repo.close()
