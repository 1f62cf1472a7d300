"""A bounded queue for fan-out to readers that may fall behind.

The writer must never block (events are emitted from callbacks) and memory must not grow while a
reader is slow or gone: a full queue drops its oldest item, counts it, and says so in the log.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)
WARN_EVERY = 1000  # dropped items between two warnings: a flood is said, not repeated per item


class DropOldestQueue(asyncio.Queue[T]):
    def __init__(self, maxsize: int, name: str) -> None:
        if maxsize <= 0:
            raise ValueError("a DropOldestQueue needs a positive maxsize")
        super().__init__(maxsize)
        self.name = name
        self.dropped = 0

    def put_nowait(self, item: T) -> None:
        if self.full():
            self.get_nowait()
            self.dropped += 1
            if self.dropped % WARN_EVERY == 1:
                log.warning("%s: reader behind, dropped the oldest item (%d so far)", self.name, self.dropped)
        super().put_nowait(item)
