"""Acknowledged PERSISTED writes survive SIGKILL: the node restarted on the same store serves
every one of them, with the same Merkle leaf sums and sequence numbers that keep increasing.
Once on SQLite, once on PostgreSQL."""

from __future__ import annotations

import asyncio

import msgpack
import numpy as np
import pytest

from libs.crdt.hashing import PARTITION_COUNT
from libs.storage_client import (
    OR_ADD,
    OR_REMOVE,
    PUT,
    REMOVE,
    OpBatchBuilder,
    StorageClient,
    WriteConcern,
)
from tests.integration.conftest import StorageNodes

pytestmark = pytest.mark.integration

PERSISTED = WriteConcern.Value("PERSISTED")
ALL = list(range(PARTITION_COUNT))


def batch(j: int) -> OpBatchBuilder:
    b = OpBatchBuilder()
    for i in range(400):
        b.append(
            "durable",
            f"b{j}-k{i}",
            PUT,
            1_700_000_000_000 + j,
            i,
            "w",
            msgpack.packb({"j": j, "i": i}),
        )
    return b


async def write_kill_restart(nodes: StorageNodes, storage: str, extra: list[str]) -> None:
    node = nodes.start("dur", storage=storage, extra=extra)
    async with StorageClient(node.address, timeout=20) as c:
        results = await asyncio.gather(*(c.apply(batch(j), PERSISTED) for j in range(12)))
        assert {r.achieved for r in results} == {PERSISTED}
        extra_ops = OpBatchBuilder()
        extra_ops.append("durable", "b0-k0", REMOVE, 1_800_000_000_000, 0, "w")
        extra_ops.append("tags", "t", OR_ADD, 5, 0, "w", msgpack.packb("red"), tag="5:0:w")
        extra_ops.append("tags", "t", OR_ADD, 6, 0, "w", msgpack.packb("blue"), tag="6:0:w")
        extra_ops.append("tags", "t", OR_REMOVE, 7, 0, "w", tag="5:0:w")
        last = await c.apply(extra_ops, PERSISTED)
        assert last.achieved == PERSISTED and last.ok
        sums = await c.leaf_sums("durable", ALL)
        or_sums = await c.leaf_sums("tags", ALL)
    node.kill()  # right after the last ack: no chance to flush anything else

    again = nodes.start("dur", storage=storage, extra=extra)
    async with StorageClient(again.address, timeout=20) as c:
        keys = [f"b{j}-k{i}" for j in range(12) for i in range(400)]
        rows = {r.key: r for r in await c.get("durable", keys)}
        assert len(rows) == len(keys)
        assert rows["b0-k0"].kind == REMOVE
        assert msgpack.unpackb(rows["b11-k399"].value) == {"j": 11, "i": 399}
        assert np.array_equal((await c.leaf_sums("durable", ALL)).sums, sums.sums)
        assert np.array_equal((await c.leaf_sums("tags", ALL)).sums, or_sums.sums)
        tags = await c.get("tags", ["t"])
        assert {(r.kind, r.tag) for r in tags} == {(OR_ADD, "6:0:w"), (OR_REMOVE, "5:0:w")}

        before = max(r.seq for r in rows.values() if r.partition == rows["b5-k5"].partition)
        b = OpBatchBuilder()
        b.append("durable", "b5-k5", PUT, 1_900_000_000_000, 0, "w", msgpack.packb("later"))
        await c.apply(b)
        (row,) = await c.get("durable", ["b5-k5"])
        assert row.seq == before + 1


async def test_persisted_writes_survive_sigkill_on_sqlite(storage_nodes: StorageNodes) -> None:
    await write_kill_restart(storage_nodes, "sqlite", [])


async def test_persisted_writes_survive_sigkill_on_sqlite_while_the_log_is_compacted(
    storage_nodes: StorageNodes,
) -> None:
    await write_kill_restart(storage_nodes, "sqlite", ["--compact-after", "700"])


@pytest.mark.postgres
async def test_persisted_writes_survive_sigkill_on_postgres(
    storage_nodes: StorageNodes, pg_dsn: str, pg_schema: str
) -> None:
    await write_kill_restart(storage_nodes, pg_dsn, ["--pg-schema", pg_schema])
