"""One real storage node process driven over gRPC: batched writes and reads, per-op errors,
scans with predicates and projections, leaf sums and bucket records against libs/crdt trees,
counters, topics, health, and the process contract."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import msgpack
import numpy as np
import pytest

from libs.crdt.hashing import PARTITION_COUNT, fnv1a, hash_hex
from libs.crdt.hlc import Timestamp
from libs.crdt.merkle import LeafSums, MerkleTree
from libs.storage_client import (
    OR_ADD,
    OR_REMOVE,
    PUT,
    REMOVE,
    BadRequest,
    OpBatchBuilder,
    OpStatus,
    StorageClient,
    WriteConcern,
)
from tests.support.processes import ROOT, ServiceProcess

pytestmark = pytest.mark.integration


def pk(v: object) -> bytes:
    return msgpack.packb(v, use_bin_type=True)


async def test_a_batch_of_a_thousand_puts_over_many_partitions_reads_back(
    storage_node: ServiceProcess,
) -> None:
    async with StorageClient(storage_node.address) as c:
        b = OpBatchBuilder()
        for i in range(1000):
            b.append("people", f"p{i}", PUT, 1_700_000_000_000 + i, 0, "w", pk({"n": i}))
        res = await c.apply(b, WriteConcern.Value("APPLIED"))
        assert res.statuses == [OpStatus.Value("OP_APPLIED")] * 1000 and res.ok
        assert len(set(b.partitions.tolist())) > 200
        rows = await c.get("people", [f"p{i}" for i in range(0, 1000, 37)] + ["missing"])
        assert sorted(r.key for r in rows) == sorted(f"p{i}" for i in range(0, 1000, 37))
        assert all(msgpack.unpackb(r.value) == {"n": int(r.key[1:])} for r in rows)
        again = await c.apply(b)
        assert set(again.statuses) == {OpStatus.Value("OP_UNCHANGED")}


async def test_bad_ops_are_answered_per_op_and_the_node_keeps_serving(
    storage_node: ServiceProcess,
) -> None:
    async with StorageClient(storage_node.address) as c:
        b = OpBatchBuilder()
        b.append("bad", "ok", PUT, 10, 0, "w", pk(1))
        b.append("bad", "nots", PUT, 0, 0, "w", pk(1))
        b.append("bad", "huge", PUT, 10, 0, "w", b"\x00" * (1024 * 1024 + 1))
        b.append("bad", "or", OR_ADD, 10, 0, "w", pk(1), tag="10:0:w")
        b.append("bad", "kind", 17, 10, 0, "w", pk(1))
        res = await c.apply(b)
        S = OpStatus.Value
        assert res.statuses == [
            S("OP_APPLIED"),
            S("OP_INVALID"),
            S("OP_TOO_LARGE"),
            S("OP_WRONG_MAP_TYPE"),
            S("OP_INVALID"),
        ]
        assert sorted(res.errors) == [1, 2, 3, 4]
        ragged = b.build()
        del ragged.node_ids[0]
        with pytest.raises(BadRequest, match="node_ids"):
            await c.apply(ragged)
        assert await c.check_health()
        assert [r.key for r in await c.get("bad", ["ok"])] == ["ok"]


async def test_scans_filter_project_limit_and_page_on_the_node(
    storage_node: ServiceProcess,
) -> None:
    async with StorageClient(storage_node.address) as c:
        b = OpBatchBuilder()
        for i in range(250):
            b.append(
                "items",
                f"i{i}",
                PUT,
                100 + i,
                0,
                "w",
                pk({"price": i, "cat": "a" if i % 2 else "b", "x": "y"}),
            )
        b.append("items", "gone", PUT, 100, 0, "w", pk({"price": 1000}))
        await c.apply(b)
        rm = OpBatchBuilder()
        rm.append("items", "gone", REMOVE, 200, 0, "w")
        await c.apply(rm)

        rows = await c.scan_all(
            "items", predicate={"op": "gte", "attribute": "price", "value": 200}, fields=["price"]
        )
        assert sorted(msgpack.unpackb(r.value)["price"] for r in rows) == list(range(200, 250))
        assert all(set(msgpack.unpackb(r.value)) == {"price"} for r in rows)

        rows = await c.scan_all("items", where={"cat": "a"})
        assert len(rows) == 125

        pages = [p async for p in c.scan("items", page_size=100)]
        assert [len(p) for p in pages] == [100, 100, 50]

        assert len(await c.scan_all("items", limit=7)) == 7
        with_tombs = await c.scan_all("items", include_tombstones=True)
        assert [r.key for r in with_tombs if r.kind == REMOVE] == ["gone"]
        with pytest.raises(BadRequest):
            await c.scan_all("items", predicate={"op": "regex", "attribute": "x", "value": "("})


async def test_leaf_sums_and_bucket_records_equal_a_crdt_tree_of_the_same_records(
    storage_node: ServiceProcess,
) -> None:
    async with StorageClient(storage_node.address) as c:
        b = OpBatchBuilder()
        tree = MerkleTree()
        for i in range(500):
            ts = Timestamp(1_700_000_000_000 + i, i % 4, f"node-{i % 3}")
            b.append(
                "merkle",
                f"key-{i}",
                PUT if i % 9 else REMOVE,
                ts.millis,
                ts.counter,
                ts.node_id,
                pk(i) if i % 9 else b"",
            )
            tree.update(f"key-{i}", ts)
        await c.apply(b)
        sums = await c.leaf_sums("merkle", list(range(PARTITION_COUNT)))
        assert sums.record_count == 500
        assert LeafSums(sums.sums).root() == tree.root
        primaries = await c.leaf_sums("merkle")
        assert np.array_equal(primaries.sums, sums.sums)

        paths = ["000", "7", "a1f", hash_hex(fnv1a("key-42"))[:3]]
        rows = await c.bucket_records("merkle", paths)
        expected = {
            f"key-{i}"
            for i in range(500)
            if any(hash_hex(fnv1a(f"key-{i}")).startswith(p) for p in paths)
        }
        assert {r.key for r in rows} == expected and "key-42" in expected
        assert any(r.kind == REMOVE for r in rows) or not any(int(k[4:]) % 9 == 0 for k in expected)


async def test_or_map_rows_carry_tags_and_per_key_tombstones(storage_node: ServiceProcess) -> None:
    async with StorageClient(storage_node.address) as c:
        b = OpBatchBuilder()
        b.append("tags", "post", OR_ADD, 10, 0, "w", pk("red"), tag="10:0:w")
        b.append("tags", "post", OR_ADD, 11, 0, "w", pk("blue"), tag="11:0:w")
        b.append("tags", "post", OR_REMOVE, 12, 0, "w", tag="10:0:w")
        assert (await c.apply(b)).ok
        rows = await c.get("tags", ["post"])
        assert {(r.kind, r.tag) for r in rows} == {(OR_ADD, "11:0:w"), (OR_REMOVE, "10:0:w")}
        page = await c.get_batch("tags", ["post"])
        assert list(page.or_tombstones) == ["10:0:w"]
        maps = {m.name: m for m in await c.maps()}
        assert maps["tags"].kind == 2 and maps["tags"].record_count == 1


async def test_counters_merge_per_node_maximum_and_fan_out_to_broadcast_subscribers(
    storage_node: ServiceProcess,
) -> None:
    async with StorageClient(storage_node.address) as c:
        feed = c.broadcasts("edge-test")
        first = asyncio.ensure_future(feed.__anext__())
        # The subscription is registered asynchronously: publish until it receives one.
        deadline = asyncio.get_running_loop().time() + 10
        while not first.done():
            assert asyncio.get_running_loop().time() < deadline, "no broadcast arrived"
            await c.publish("news", pk({"h": 1}), origin="e/1")
            await asyncio.wait({first}, timeout=0.1)
        item = first.result()
        assert item.topic.topic == "news" and item.topic.origin == "e/1"

        merged = await c.counter_merge("likes", {"a": 5, "b": 2}, {"a": 1}, origin="e/2")
        merged = await c.counter_merge("likes", {"a": 3, "c": 1}, {}, origin="e/3")
        assert merged.positive == {"a": 5.0, "b": 2.0, "c": 1.0} and merged.value == 7.0
        assert (await c.counter_get("likes")).value == 7.0
        seen = []
        while len(seen) < 2:
            nxt = await asyncio.wait_for(feed.__anext__(), 5)
            if nxt.WhichOneof("item") == "counter":
                seen.append(nxt.counter.origin)
        assert seen == ["e/2", "e/3"]
        await feed.aclose()


async def test_a_standalone_node_owns_every_partition(storage_node: ServiceProcess) -> None:
    async with StorageClient(storage_node.address) as c:
        info = await c.partition_info()
        assert info.node_id == "solo" and set(info.table.owners) == {"solo"}
        assert info.table.addresses == {"solo": f"127.0.0.1:{storage_node.port}"}


def test_help_describes_the_flags() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "services.storage", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0
    for flag in ("--node-id", "--peers", "--backup-count", "--storage", "--data-dir"):
        assert flag in out.stdout


def test_sigterm_flushes_and_exits_zero(storage_nodes: object) -> None:
    proc = storage_nodes.start("bye", storage="sqlite")  # type: ignore[attr-defined]
    assert proc.stop() == 0
