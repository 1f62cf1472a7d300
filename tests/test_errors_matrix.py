"""The errors matrix judges only its own rows: what each row's code leaves behind, never what the
rest of the process (the chat bot, other people's commands, another check) is doing meanwhile."""

from __future__ import annotations

import asyncio
import contextlib

from bot.app import with_gateway
from bot.checks.base import CheckContext
from bot.checks.errors import ROWS, ErrorsCheck
from bot.config import Config
from bot.operators import SilentOperator

REFUSED, GARBAGE = ROWS[0], ROWS[2]


def context(port: int) -> CheckContext:
    config = with_gateway(Config(), host="127.0.0.1", port=port, connect_timeout=2)
    return CheckContext(config, config.gateway(), SilentOperator())


class LeakyErrorsCheck(ErrorsCheck):
    """A client that fails as expected but leaves a task running and a connection open."""

    async def attempt(self, host: str, port: int, client_id: int) -> tuple[str, str, float]:
        got = await super().attempt(host, port, client_id)
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        self.kept = (server, await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1]))
        self.forever = asyncio.create_task(asyncio.sleep(3600))
        return got

    async def close(self) -> None:
        server, (_, writer) = self.kept
        self.forever.cancel()
        writer.close()
        server.close()
        await asyncio.gather(self.forever, server.wait_closed(), return_exceptions=True)


async def busy_neighbour(port: int, stop: asyncio.Event) -> None:
    """Other code in the process starting tasks and opening connections the whole time."""
    kept: list[asyncio.StreamWriter] = []
    tasks: list[asyncio.Task[None]] = []
    while not stop.is_set():
        tasks.append(asyncio.create_task(asyncio.sleep(30)))
        with contextlib.suppress(OSError):
            kept.append((await asyncio.open_connection("127.0.0.1", port))[1])
        await asyncio.sleep(0.05)
    for task in tasks:
        task.cancel()
    for writer in kept:
        writer.close()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_row_that_leaks_a_task_and_a_socket_fails(gateway):
    check = LeakyErrorsCheck((REFUSED,))
    try:
        result = await check.run(context(gateway.port))
    finally:
        await check.close()
    assert result.status.value == "failed"
    assert "refused port: leaked 1 task(s) and 1 socket(s)" in result.error


async def test_tasks_and_sockets_of_other_code_are_not_the_rows(gateway):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    neighbour = asyncio.create_task(busy_neighbour(gateway.port, stop))
    try:
        first, second = await asyncio.gather(ErrorsCheck((REFUSED, GARBAGE)).run(context(gateway.port)),
                                             ErrorsCheck((GARBAGE, REFUSED)).run(context(gateway.port)))
    finally:
        stop.set()
        await neighbour
    assert (first.status.value, second.status.value) == ("passed", "passed"), (first.error, second.error)
    assert loop.get_task_factory() is None and "create_connection" not in vars(loop), "hooks removed after"
