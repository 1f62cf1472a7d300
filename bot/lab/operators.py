"""Operators that need no person: the simulated Gateway's automatic hands, and one who never acts."""

from __future__ import annotations

import asyncio
import logging

from bot.checks.base import OperatorAction, OperatorReply, Reply
from bot.lab.simulator import SimulatedGateway

log = logging.getLogger(__name__)


class AutoOperator:
    """Stops and restarts a simulated Gateway when asked, after a person-like pause."""

    def __init__(self, gateway: SimulatedGateway, *, reaction: float = 1.0, down_for: float = 2.0) -> None:
        self.gateway = gateway
        self.reaction = reaction
        self.down_for = down_for

    async def tell(self, text: str) -> None:
        log.info("operator told: %s", text)

    async def ask(self, action: OperatorAction, text: str) -> OperatorReply:
        log.info("operator asked: %s", text)
        if action is OperatorAction.STOP_GATEWAY:
            await asyncio.sleep(self.reaction)
            await self.gateway.stop()
        else:
            # The seed: "wait 10 seconds, then start IBKR Gateway" (shortened here).
            await asyncio.sleep(self.down_for)
            await self.gateway.start()
        return OperatorReply(Reply.DONE, by="auto-operator")


class SilentOperator:
    """Never acts and never answers: for testing the operator deadlines."""

    async def tell(self, text: str) -> None:
        log.info("operator told (nobody listens): %s", text)

    async def ask(self, action: OperatorAction, text: str) -> OperatorReply:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")
