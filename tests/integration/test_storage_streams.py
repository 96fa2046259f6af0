"""Apply over the long-lived ApplyStream, against real storage nodes: answers are matched to
their requests by id and leave in the order they are ready (a write waiting for its backup holds
up no other), a request that fails as a whole fails alone, a node that goes away fails what was
in flight with StorageUnavailable, and the next request opens a new stream to the restarted node.
"""

from __future__ import annotations

import asyncio
import time

import msgpack
import pytest

from libs.crdt.hashing import partition_of
from libs.storage_client import (
    PUT,
    BadRequest,
    OpBatchBuilder,
    OpStatus,
    StorageClient,
    StorageUnavailable,
    WriteConcern,
)
from tests.integration.conftest import StorageNodes
from tests.support.processes import free_port

pytestmark = pytest.mark.integration

APPLIED = WriteConcern.Value("APPLIED")
REPLICATED = WriteConcern.Value("REPLICATED")


def puts(keys: list[str], millis: int) -> OpBatchBuilder:
    b = OpBatchBuilder()
    for k in keys:
        b.append("s", k, PUT, millis, 0, "w", msgpack.packb(k))
    return b


async def test_many_concurrent_applies_share_one_stream_and_each_gets_its_own_answer(
    storage_nodes: StorageNodes,
) -> None:
    node = storage_nodes.start("solo")
    async with StorageClient(node.address) as c:
        batches = [puts([f"k{i}-{j}" for j in range(i + 1)], 1000 + i) for i in range(40)]
        results = await asyncio.gather(*(c.apply(b) for b in batches))
        assert [len(r.statuses) for r in results] == [i + 1 for i in range(40)]
        assert all(set(r.statuses) == {OpStatus.Value("OP_APPLIED")} for r in results)
        again = await c.apply(batches[7])
        assert set(again.statuses) == {OpStatus.Value("OP_UNCHANGED")}
        assert c._applies is not None and c._applies.opened == 1


async def test_a_write_waiting_for_a_missing_backup_holds_up_no_other_write(
    storage_nodes: StorageNodes,
) -> None:
    procs = storage_nodes.cluster(2)
    procs["s2"].kill()
    async with StorageClient(procs["s1"].address) as c:
        table = (await c.partition_info()).table
        mine = [k for k in (f"w{i}" for i in range(200)) if table.owners[partition_of(k)] == "s1"]
        slow = asyncio.ensure_future(c.apply(puts(mine[:5], 1000), REPLICATED, timeout=3.0))
        await asyncio.sleep(0.1)
        t0 = time.monotonic()
        fast = await c.apply(puts(mine[5:10], 1000), APPLIED)
        assert time.monotonic() - t0 < 1.0 and fast.achieved == APPLIED
        assert not slow.done()  # still waiting for the backup
        res = await slow
        assert res.achieved == APPLIED and res.ok  # the backup never came: how far it got


async def test_a_malformed_batch_fails_alone_and_the_stream_goes_on(
    storage_nodes: StorageNodes,
) -> None:
    node = storage_nodes.start("solo")
    async with StorageClient(node.address) as c:
        ragged = puts(["a", "b"], 1000).build()
        del ragged.millis[0]
        good = asyncio.ensure_future(c.apply(puts(["c"], 1000)))
        with pytest.raises(BadRequest, match="millis"):
            await c.apply(ragged)
        assert (await good).ok
        assert (await c.apply(puts(["d"], 1000))).ok
        assert c._applies is not None and c._applies.opened == 1


async def test_a_node_that_goes_away_fails_requests_in_flight_and_a_new_stream_follows(
    storage_nodes: StorageNodes,
) -> None:
    port = free_port()
    first = storage_nodes.start("solo", extra=["--port", str(port)])
    async with StorageClient(f"127.0.0.1:{port}", timeout=3.0) as c:
        assert (await c.apply(puts(["before"], 1000))).ok
        first.kill()
        with pytest.raises(StorageUnavailable):
            await c.apply(puts(["during"], 1000))
        storage_nodes.start("solo", extra=["--port", str(port)])
        deadline = time.monotonic() + 20
        while True:
            try:
                res = await c.apply(puts(["after"], 1000))
                break
            except StorageUnavailable:
                assert time.monotonic() < deadline, "the restarted node was never reached"
                await asyncio.sleep(0.1)
        assert res.ok
        assert c._applies is not None and c._applies.opened >= 2
