"""The change feed of a real storage node over gRPC: catch-up, live changes with origins,
resuming from the last seqs after a reconnect, and dropping a subscriber that stops reading."""

from __future__ import annotations

import asyncio

import msgpack
import pytest

from libs.storage_client import PUT, Change, FeedDropped, OpBatchBuilder, StorageClient
from tests.integration.conftest import StorageNodes

pytestmark = pytest.mark.integration


def puts(m: str, keys: list[str], millis: int, origin: str = "edge-1/1") -> OpBatchBuilder:
    b = OpBatchBuilder()
    for k in keys:
        b.append(m, k, PUT, millis, 0, "w", msgpack.packb([k, millis]), origin=origin)
    return b


async def read_until(feed: object, pred: object, timeout: float = 10.0) -> list[Change]:
    """Collect changes from ``feed`` until ``pred(collected, page)`` holds."""
    got: list[Change] = []

    async def run() -> list[Change]:
        async for page in feed:  # type: ignore[attr-defined]
            got.extend(page.changes)
            if pred(got, page):  # type: ignore[operator]
                return got
        raise AssertionError("the feed ended")

    return await asyncio.wait_for(run(), timeout)


def advance(last: dict[int, int], changes: list[Change]) -> None:
    for ch in changes:
        last[ch.partition] = max(last.get(ch.partition, 0), ch.seq)


async def test_feed_resumes_after_a_reconnect_with_exactly_the_missed_changes(
    storage_nodes: StorageNodes,
) -> None:
    node = storage_nodes.start("feed", storage="memory")
    async with StorageClient(node.address) as c:
        await c.apply(puts("m", [f"k{i}" for i in range(100)], 1000))
        await c.apply(puts("other", ["x"], 1000))
        last: dict[int, int] = {}

        feed = c.change_feed(["m"], subscriber="test")
        caught = await read_until(feed, lambda got, page: page.caught_up)
        assert sorted(ch.record.key for ch in caught) == sorted(f"k{i}" for i in range(100))
        advance(last, caught)

        await c.apply(puts("m", [f"k{i}" for i in range(100, 150)], 2000, origin="edge-9/3"))
        live = await read_until(feed, lambda got, page: len(got) >= 50)
        assert sorted(ch.record.key for ch in live) == sorted(f"k{i}" for i in range(100, 150))
        assert {ch.origin for ch in live} == {"edge-9/3"}
        advance(last, live)
        await feed.aclose()  # disconnected

        await c.apply(puts("m", [f"k{i}" for i in range(0, 150, 5)], 3000))  # 30 updates
        await c.apply(puts("m", ["new-1", "new-2"], 3000))
        await c.apply(puts("m", ["k0"], 4000))  # k0 changes twice while we are away

        feed = c.change_feed(["m"], from_seq=last, subscriber="test")
        missed = await read_until(feed, lambda got, page: page.caught_up)
        keys = [ch.record.key for ch in missed]
        assert sorted(keys) == sorted([f"k{i}" for i in range(0, 150, 5)] + ["new-1", "new-2"])
        assert next(ch.record.millis for ch in missed if ch.record.key == "k0") == 4000
        assert all(ch.seq > last.get(ch.partition, 0) for ch in missed)
        await feed.aclose()


async def test_a_subscriber_that_stops_reading_is_dropped_and_told_why(
    storage_nodes: StorageNodes,
) -> None:
    node = storage_nodes.start("feed-slow", storage="memory", extra=["--feed-queue-batches", "4"])
    async with StorageClient(node.address) as c:
        feed = c.change_feed(subscriber="sleepy")
        await read_until(feed, lambda got, page: page.caught_up)
        big = b"x" * 2000
        for j in range(60):  # ~12 MB of changes: more than the transport buffers
            b = OpBatchBuilder()
            for i in range(100):
                b.append("m", f"k{j}-{i}", PUT, 10 + j, 0, "w", big)
            await c.apply(b)
        with pytest.raises(FeedDropped, match="fell behind"):
            await read_until(feed, lambda got, page: False, timeout=30)
