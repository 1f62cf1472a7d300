"""Numbers typed in chat: one parser, the config's ranges, one usage line for anything else."""

from __future__ import annotations

import pytest

from tests.test_chat import running_chat


@pytest.fixture
async def chat(tmp_path):
    async for c in running_chat(tmp_path):
        yield c


@pytest.mark.parametrize(("command", "answer"), [
    ("/soak nan", "Usage: /soak [minutes] [Gateway], minutes from 0.05 to 1440, e.g. /soak 10"),
    ("/soak inf", "Usage: /soak [minutes]"),
    ("/soak 0", "Usage: /soak [minutes]"),
    ("/soak -5", "Usage: /soak [minutes]"),
    ("/soak 1e300", "Usage: /soak [minutes]"),
    ("/soak 1_0", "Usage: /soak [minutes]"),
    ("/soak 1 2", "Usage: /soak [minutes]"),
    ("/report 99999999999999999999999", "Usage: /report [run number]"),
    ("/logs ٣", "Usage: /logs [run number]"),
    ("/report 0", "Usage: /report [run number]"),
])
async def test_bad_numbers_get_the_usage_line(chat, command, answer):
    reply = await chat.ask(command, answer.split(",")[0])
    assert reply.text.startswith(answer) and reply.text.count("\n") == 0
    assert await chat.services.repo.list_runs() == [], "nothing started"
