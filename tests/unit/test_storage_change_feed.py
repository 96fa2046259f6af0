"""The change feed inside one process: catch-up from the store then live changes without a gap,
filters, resumption from seqs, and dropping a subscriber that falls behind."""

from __future__ import annotations

import asyncio

import msgpack
import numpy as np
import pytest

from libs.crdt.hashing import PARTITION_COUNT, partition_of
from libs.storage_client import PUT, OpBatchBuilder, changes_from_batch
from services.storage.change_feed import ChangeFanout, FeedFilter, SubscriberDropped, stream_changes
from services.storage.merge import merge_batch
from services.storage.partition_store import PartitionStore
from topgun_rpc import storage_pb2

ALL = np.ones(PARTITION_COUNT, dtype=bool)
EVERYTHING = FeedFilter(None, frozenset(range(PARTITION_COUNT)), primaries_only=True)


def write(store: PartitionStore, fan: ChangeFanout, m: str, pairs: list[tuple[str, int]]) -> None:
    b = OpBatchBuilder()
    for key, ms in pairs:
        b.append(m, key, PUT, ms, 0, "n", msgpack.packb(ms))
    fan.publish(merge_batch(store, b.build(), ALL).changes)


async def take(gen: object, n: int) -> list[storage_pb2.ChangeBatch]:
    out = []
    for _ in range(n):
        out.append(await asyncio.wait_for(gen.__anext__(), 5))  # type: ignore[attr-defined]
    return out


async def test_catch_up_sends_the_newest_state_per_key_then_a_marker_then_live_changes() -> None:
    store, fan = PartitionStore(), ChangeFanout()
    write(store, fan, "m", [("a", 1), ("b", 2)])
    write(store, fan, "m", [("a", 3)])
    gen = stream_changes(fan, store, "s1", "t", EVERYTHING, {})
    first, marker = await take(gen, 2)
    rows = changes_from_batch(first).changes
    assert sorted((c.record.key, c.record.millis) for c in rows) == [("a", 3), ("b", 2)]
    assert marker.caught_up and len(marker.ops.keys) == 0
    write(store, fan, "m", [("c", 4)])
    (live,) = await take(gen, 1)
    assert list(live.ops.keys) == ["c"] and not live.caught_up
    await gen.aclose()
    assert len(fan) == 0


async def test_resuming_from_seqs_skips_what_the_subscriber_already_saw() -> None:
    store, fan = PartitionStore(), ChangeFanout()
    write(store, fan, "m", [("a", 1)])
    seen = {p: s for p, s in enumerate(store.seqs) if s}
    write(store, fan, "m", [("b", 2), ("a", 5)])
    gen = stream_changes(fan, store, "s1", "t", EVERYTHING, seen)
    first, marker = await take(gen, 2)
    assert sorted(first.ops.keys) == ["a", "b"] and marker.caught_up
    assert list(first.ops.millis)[list(first.ops.keys).index("a")] == 5
    await gen.aclose()


async def test_filters_keep_only_the_maps_and_partitions_asked_for() -> None:
    store, fan = PartitionStore(), ChangeFanout()
    p = partition_of("x")
    filt = FeedFilter(frozenset({"wanted"}), frozenset({p}), primaries_only=False)
    gen = stream_changes(fan, store, "s1", "t", filt, {}, live_only=True)
    (marker,) = await take(gen, 1)
    assert marker.caught_up
    write(store, fan, "other", [("x", 1)])
    write(store, fan, "wanted", [("x", 2), ("not-in-partition", 3)])
    (live,) = await take(gen, 1)
    assert list(live.ops.keys) == ["x"] and list(live.ops.map_names) == ["wanted"]
    assert list(live.ops.partitions) == [p]
    await gen.aclose()


async def test_a_subscriber_that_falls_behind_is_dropped_with_a_reason() -> None:
    store, fan = PartitionStore(), ChangeFanout(queue_size=2)
    gen = stream_changes(fan, store, "s1", "slowpoke", EVERYTHING, {}, live_only=True)
    await take(gen, 1)
    for i in range(3):
        write(store, fan, "m", [(f"k{i}", i + 1)])
    assert fan.dropped_total == 1 and len(fan) == 0
    with pytest.raises(SubscriberDropped, match="slowpoke"):
        await take(gen, 3)


async def test_changes_queued_while_a_batch_is_out_leave_together_in_order() -> None:
    store, fan = PartitionStore(), ChangeFanout()
    gen = stream_changes(fan, store, "s1", "t", EVERYTHING, {}, live_only=True)
    await take(gen, 1)
    write(store, fan, "m", [("a", 1)])
    write(store, fan, "n", [("b", 2)])
    write(store, fan, "m", [("c", 3)])
    (live,) = await take(gen, 1)
    assert list(live.ops.keys) == ["a", "b", "c"]
    names = list(live.ops.map_names)
    assert [names[i] for i in live.ops.map_index] == ["m", "n", "m"]
    await gen.aclose()


async def test_a_lingering_subscriber_gets_changes_written_during_the_linger_in_one_batch() -> None:
    store, fan = PartitionStore(), ChangeFanout()
    gen = stream_changes(fan, store, "s1", "t", EVERYTHING, {}, live_only=True, linger_s=0.2)
    await take(gen, 1)
    nxt = asyncio.ensure_future(gen.__anext__())
    write(store, fan, "m", [("a", 1)])
    await asyncio.sleep(0.05)
    assert not nxt.done()  # still lingering
    write(store, fan, "m", [("b", 2)])
    live = await asyncio.wait_for(nxt, 5)
    assert list(live.ops.keys) == ["a", "b"]
    await gen.aclose()
