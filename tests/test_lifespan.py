"""One composition root, one lifespan: the chat bot starts storage, Gateway jobs and the chat in
order and stops them in reverse, once each, with no entry point to find the handlers."""

from __future__ import annotations

from bot.app import serving_chat
from bot.config import Config, TelegramConfig
from bot.jobs import JobBoard
from bot.lab.telegram_standin import BotApiStandIn
from bot.services import with_gateway


async def test_the_chat_starts_without_an_entry_point_and_stops_its_jobs_once(tmp_path, monkeypatch):
    monkeypatch.setattr("importlib.metadata.entry_points", lambda **_: ())  # as in a checkout never installed
    stops = []
    shutdown = JobBoard.shutdown

    async def counted(self: JobBoard) -> None:
        stops.append(self)
        await shutdown(self)

    monkeypatch.setattr(JobBoard, "shutdown", counted)
    config = with_gateway(Config(data_dir=tmp_path, telegram=TelegramConfig(allowed_chat_ids=frozenset({1}))),
                          host="127.0.0.1", port=1)
    async with BotApiStandIn() as standin:
        async with serving_chat(config, standin.token, base_url=standin.base_url, poll_timeout=1) as services:
            assert standin.commands, "the handlers are installed and registered their menu"
            assert await services.repo.list_runs() == []
        assert len(stops) == 1, "the jobs stop once, between the chat and storage"
