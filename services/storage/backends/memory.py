"""The memory backend: nothing is kept, everything is "durable" at once (tests, benchmarks)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.storage.backends import LoadChunk, WriteBatch


class MemoryBackend:
    name = "memory"

    def __init__(self) -> None:
        self.writes = 0

    async def open(self) -> None:
        return None

    async def load(self) -> AsyncIterator[LoadChunk]:
        return
        yield  # an empty async generator

    async def write(self, batch: WriteBatch) -> None:
        self.writes += 1

    async def close(self) -> None:
        return None
