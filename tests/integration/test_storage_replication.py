"""Two storage nodes with a static partition table: writes go to primaries, REPLICATED waits for
the backup, ops sent to the wrong node are refused per op, and a backup that comes back empty is
resynced from the primary's store."""

from __future__ import annotations

import asyncio

import msgpack
import pytest

from libs.storage_client import (
    PUT,
    OpBatchBuilder,
    OpStatus,
    StorageClient,
    StorageRouter,
    WriteConcern,
)
from tests.integration.conftest import StorageNodes

pytestmark = pytest.mark.integration

REPLICATED = WriteConcern.Value("REPLICATED")
APPLIED = WriteConcern.Value("APPLIED")


def puts(keys: list[str], millis: int) -> OpBatchBuilder:
    b = OpBatchBuilder()
    for k in keys:
        b.append("r", k, PUT, millis, 0, "w", msgpack.packb(k))
    return b


async def eventually(check: object, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, f"not reached within {timeout}s"
        await asyncio.sleep(0.05)


async def test_replication_between_a_primary_and_its_backup(storage_nodes: StorageNodes) -> None:
    procs = storage_nodes.cluster(2)
    async with StorageClient(procs["s1"].address) as s1:
        table = (await s1.partition_info()).table
    assert set(table.owners) == {"s1", "s2"}
    assert all(
        b == (("s2",) if o == "s1" else ("s1",))
        for o, b in zip(table.owners, table.backups, strict=True)
    )
    router = StorageRouter.connect(table)
    try:
        keys = [f"key-{i}" for i in range(400)]
        res = await router.apply(puts(keys, 1000), REPLICATED)
        assert res.achieved == REPLICATED and set(res.statuses) == {OpStatus.Value("OP_APPLIED")}

        # Every key is on its backup too: each node holds every partition here.
        for node in ("s1", "s2"):
            rows = await router.client_of(node).get("r", keys)
            assert sorted(r.key for r in rows) == sorted(keys)

        # The primary of a key refuses nothing; the other node answers OP_NOT_OWNER per op.
        b = puts(keys[:50], 2000)
        owners = [table.owners[p] for p in b.partitions.tolist()]
        direct = await router.client_of("s1").apply(b)
        for owner, status in zip(owners, direct.statuses, strict=True):
            assert status == OpStatus.Value("OP_APPLIED" if owner == "s1" else "OP_NOT_OWNER")

        # With the backup gone, REPLICATED cannot be met: the ack says how far the write got.
        procs["s2"].kill()
        s1_keys = [
            k for k in (f"late-{i}" for i in range(300)) if table.owners[_partition(k)] == "s1"
        ]
        res = await router.client_of("s1").apply(puts(s1_keys, 3000), REPLICATED, timeout=1.0)
        assert res.achieved == APPLIED and res.ok

        # The backup restarts empty (memory store); the primary resyncs it from its own store.
        storage_nodes.start("s2", storage="memory", peers=_ports(procs))
        mine = [k for k in keys if table.owners[_partition(k)] == "s1"] + s1_keys
        s2 = router.client_of("s2")

        async def backup_has_everything() -> bool:
            try:
                return len(await s2.get("r", mine, timeout=2)) == len(mine)
            except Exception:
                return False

        await eventually(backup_has_everything)
        res = await router.client_of("s1").apply(puts(s1_keys[:5], 4000), REPLICATED)
        assert res.achieved == REPLICATED
    finally:
        await router.close()


def _partition(key: str) -> int:
    from libs.crdt.hashing import partition_of

    return partition_of(key)


def _ports(procs: dict[str, object]) -> dict[str, int]:
    return {n: p.port for n, p in procs.items()}  # type: ignore[attr-defined]


async def test_pn_counters_reach_the_backup_and_survive_it_taking_over(
    storage_nodes: StorageNodes,
) -> None:
    procs = storage_nodes.cluster(2, storage="sqlite")
    async with StorageClient(procs["s1"].address) as s1:
        table = (await s1.partition_info()).table
        names = (f"likes-{i}" for i in range(100))
        name = next(n for n in names if table.owners[_partition(n)] == "s1")
        p = _partition(name)
        keys = [k for k in (f"k{i}" for i in range(20_000)) if _partition(k) == p][:2]
        # The backup is connected and caught up (its first resync is behind us) ...
        assert (await s1.apply(puts(keys[:1], 1000), REPLICATED)).achieved == REPLICATED
        # ... so these states travel as live replication, not in a resync.
        await s1.counter_merge(name, {"alice": 3.0}, {})
        await s1.counter_merge(name, {"alice": 5.0, "bob": 2.0}, {"alice": 1.0})
        # A REPLICATED write of the same partition leaves after them and waits for the backup.
        assert (await s1.apply(puts(keys[1:], 1000), REPLICATED)).achieved == REPLICATED
    procs["s1"].kill()
    procs["s2"].stop()
    alone = storage_nodes.start("s2", storage="sqlite")  # its own store, every partition its own
    async with StorageClient(alone.address) as s2:
        got = await s2.counter_get(name)
    assert got.positive == {"alice": 5.0, "bob": 2.0} and got.negative == {"alice": 1.0}
    assert got.value == 6.0
