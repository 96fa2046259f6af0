"""Distributed queries and jobs against real processes: three storage nodes and the query_dag
coordinator. Results are checked against libs.query's evaluate() over the same records."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings

from libs.cluster.partition_table import PartitionTable
from libs.dag import (
    VALUE_COLUMN,
    DagSpec,
    EdgeSpec,
    Placement,
    QueryDagClient,
    QueryDagError,
    Routing,
    VertexSpec,
    concat_batches,
)
from libs.query.evaluate import evaluate
from libs.query.model import parse_query
from libs.storage_client import (
    PUT,
    REMOVE,
    OpBatchBuilder,
    StorageClient,
    StorageRouter,
    WriteConcern,
)
from tests.integration.conftest import StorageNodes
from tests.property.test_dag_plan import assert_same_result, datasets, queries
from tests.support.processes import ServiceProcess, free_port, start_service, wait_for
from topgun_rpc import fragment_pb2, fragment_pb2_grpc

pytestmark = pytest.mark.integration

NOW = 1_700_000_000_000
REPLICATED = WriteConcern.Value("REPLICATED")


class DagCluster:
    def __init__(self, data_dir: Path, nodes: int = 3, extra: tuple[str, ...] = ()) -> None:
        self.storage = StorageNodes(data_dir)
        self.nodes = self.storage.cluster(nodes)
        spec = ",".join(f"{n}={p.address}" for n, p in self.nodes.items())
        self.coordinator: ServiceProcess = start_service(
            "services.query_dag", ["--port", "0", "--storage-nodes", spec, *extra]
        )
        self.table = PartitionTable.static(
            list(self.nodes),
            backup_count=1,
            addresses={n: p.address for n, p in self.nodes.items()},
        )

    @property
    def address(self) -> str:
        return self.coordinator.address

    def stop(self) -> None:
        self.coordinator.stop()
        self.storage.stop_all()

    async def write(self, map_name: str, records: list[tuple[str, Any]], millis: int = NOW) -> None:
        router = StorageRouter.connect(self.table)
        try:
            for i in range(0, len(records), 2000):
                b = OpBatchBuilder()
                for k, v in records[i : i + 2000]:
                    if v is None:
                        b.append(map_name, k, REMOVE, millis, 0, "w")
                    else:
                        b.append(map_name, k, PUT, millis, 0, "w", msgpack.packb(v))
                res = await router.apply(b, REPLICATED, timeout=10)
                assert res.ok, res.errors
        finally:
            await router.close()

    async def running_fragments(self, job_id: str) -> int:
        total = 0
        for proc in self.nodes.values():
            if not proc.alive():
                continue
            client = StorageClient(proc.address)
            try:
                stub = fragment_pb2_grpc.FragmentsStub(client._channel)
                resp = await stub.CancelFragment(
                    fragment_pb2.CancelFragmentRequest(job_id=job_id, dry_run=True), timeout=5
                )
                total += resp.cancelled
            finally:
                await client.close()
        return total


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagCluster]:
    # results stream straight through (nothing held for retries), so back-pressure reaches the
    # nodes and a job nobody reads keeps its fragments running
    c = DagCluster(tmp_path_factory.mktemp("dag"), extra=("--hold-rows", "0"))
    try:
        yield c
    finally:
        c.stop()


rng = random.Random(11)
ORDERS = [
    (
        f"o{i:05d}",
        {
            "region": rng.choice(["north", "south", "east", "west", None]),
            "amount": rng.choice([rng.randint(0, 1000), round(rng.random() * 100, 3)]),
            "qty": rng.randint(1, 9),
            "status": rng.choice(["new", "paid", "shipped"]),
            "customer": {"tier": rng.choice(["gold", "silver"])},
        },
    )
    for i in range(3000)
]


@pytest.fixture(scope="module")
def wide(cluster: DagCluster) -> None:
    pad = "x" * 2000
    asyncio.run(cluster.write("wide", [(f"w{i}", {"i": i, "pad": pad}) for i in range(3000)]))


@pytest.fixture(scope="module")
def orders(cluster: DagCluster) -> list[tuple[str, Any]]:
    asyncio.run(cluster.write("orders", ORDERS))
    return ORDERS


QUERIES = [
    ({}, None),
    ({"where": {"status": "paid"}}, ["amount"]),
    (
        {
            "predicate": {
                "op": "and",
                "children": [
                    {"op": "gte", "attribute": "amount", "value": 500},
                    {"op": "eq", "attribute": "customer.tier", "value": "gold"},
                ],
            },
            "sort": [{"field": "amount", "direction": "desc"}],
            "limit": 20,
        },
        ["amount", "region"],
    ),
    ({"sort": {"region": "asc", "qty": "desc"}, "limit": 50}, None),
    (
        {
            "groupBy": ["region"],
            "aggregations": [
                {"func": "sum", "field": "qty"},
                {"func": "avg", "field": "amount"},
                {"func": "min", "field": "amount"},
                {"func": "max", "field": "qty"},
                {"func": "count"},
            ],
        },
        None,
    ),
    (
        {
            "groupBy": ["region", "status"],
            "sort": [{"field": "__count", "direction": "desc"}],
            "limit": 4,
        },
        None,
    ),
]


@pytest.mark.parametrize("query,fields", QUERIES)
async def test_queries_over_three_nodes_answer_like_evaluate(
    cluster, orders, query, fields
) -> None:
    async with QueryDagClient(cluster.address, timeout=30) as client:
        got = await client.query("orders", query, fields, now_ms=NOW)
    expected = evaluate(parse_query(query, fields), orders, now_ms=NOW)
    assert_same_result(got, expected)


async def test_the_row_clamp_and_cursor_pages_match_evaluate(cluster, orders) -> None:
    query = {"sort": [{"field": "amount", "direction": "asc"}], "limit": 500}
    async with QueryDagClient(cluster.address, timeout=30) as client:
        first = await client.query("orders", query, now_ms=NOW, max_results=100)
        assert first.has_more and first.next_cursor
        second = await client.query(
            "orders", {**query, "cursor": first.next_cursor}, now_ms=NOW, max_results=100
        )
    q = parse_query({**query, "cursor": first.next_cursor})
    assert_same_result(second, evaluate(q, orders, now_ms=NOW, max_results=100))
    assert second.cursor_status == "valid"


async def test_an_analytics_job_streams_batches_and_reports_per_vertex_counters(
    cluster, orders
) -> None:
    job = {
        "predicate": {"op": "neq", "attribute": "status", "value": "new"},
        "aggregations": [{"func": "count"}, {"func": "count_distinct", "field": "region"}],
    }
    async with QueryDagClient(cluster.address, timeout=30) as client:
        batches = [b async for b in client.run_job("orders", job, job_id="count-job")]
        status = await client.status("count-job")
    rows = list(concat_batches(batches).rows())
    matching = [v for _, v in orders if v["status"] != "new"]
    assert rows == [("", {"__key": "", "__count": len(matching), "__count_distinct_region": 4})]
    assert status.state == "completed"
    vertices = {v.name: v for v in status.vertices}
    assert vertices["source"].rows_out == len(matching)
    assert vertices["partial"].rows_out == 3  # one partial state row per node
    assert vertices["final"].rows_out == 1
    assert status.rows_scanned == len(orders)
    assert {f.node_id for f in status.fragments} == set(cluster.nodes)


async def test_a_dag_described_in_protobuf_runs_distributed(cluster, orders) -> None:
    dag = DagSpec(
        (
            VertexSpec(
                "scan",
                "source",
                {"map": "orders", "fields": ["qty"], "where": {"status": "shipped"}},
                1,
                Placement.STORAGE,
            ),
            VertexSpec(
                "big",
                "filter",
                {"predicate": {"op": "gt", "attribute": "qty", "value": 5}},
                2,
                Placement.STORAGE,
            ),
            VertexSpec("collect", "forward", {}, 1, Placement.COORDINATOR),
        ),
        (
            EdgeSpec("scan", "big", routing=Routing.ROUND_ROBIN),
            EdgeSpec("big", "collect", routing=Routing.ALL_TO_ONE),
        ),
    )
    async with QueryDagClient(cluster.address, timeout=30) as client:
        batches = [b async for b in client.run_dag(dag)]
    got = sorted(k for b in batches for k, _ in b.rows())
    assert got == sorted(k for k, v in orders if v["status"] == "shipped" and v["qty"] > 5)


async def test_a_distributed_hash_join_reads_its_build_side_first(cluster, orders) -> None:
    """Both sides stream many small batches from every node, more than the queues hold: only
    because each node sends its build side completely before its probe side does the join
    neither deadlock nor buffer without limit."""

    def side(name: str, field: str) -> VertexSpec:
        params = {"map": "orders", "fields": [field], "batch_rows": 10}
        return VertexSpec(name, "source", params, 1, Placement.STORAGE)

    dag = DagSpec(
        (
            side("build", "qty"),
            side("probe", "status"),
            VertexSpec(
                "join",
                "hash_join",
                {"left_on": "_key", "right_on": "_key", "left_prefix": "b.", "right_prefix": "p."},
                1,
                Placement.COORDINATOR,
            ),
        ),
        (
            EdgeSpec("build", "join", target_ordinal=0, priority=0, routing=Routing.ALL_TO_ONE),
            EdgeSpec("probe", "join", target_ordinal=1, priority=1, routing=Routing.ALL_TO_ONE),
        ),
    )
    async with QueryDagClient(cluster.address, timeout=30) as client:
        batches = [b async for b in client.run_dag(dag)]
    rows = sorted((v["b._key"], v["b.qty"], v["p.status"]) for b in batches for _, v in b.rows())
    assert rows == sorted((k, v["qty"], v["status"]) for k, v in orders)


async def test_writes_after_a_query_show_in_the_next_one(cluster) -> None:
    await cluster.write("live", [(f"k{i}", {"n": i}) for i in range(100)])
    query = {"groupBy": ["bucket"], "aggregations": [{"func": "sum", "field": "n"}]}
    async with QueryDagClient(cluster.address, timeout=30) as client:
        before = await client.query("live", query)
        assert [v["__sum_n"] for _, v in before.results] == [4950]
        await cluster.write(
            "live", [(f"k{i}", {"n": 1000, "bucket": "b"}) for i in range(10)], NOW + 1
        )
        await cluster.write("live", [(f"k{i}", None) for i in range(90, 100)], NOW + 1)
        after = await client.query("live", query)
    sums = {v["bucket"]: v["__sum_n"] for _, v in after.results}
    assert sums == {None: sum(range(10, 90)), "b": 10_000}


async def test_a_bad_query_is_refused_as_invalid_argument(cluster) -> None:
    async with QueryDagClient(cluster.address, timeout=10) as client:
        with pytest.raises(QueryDagError) as info:
            await client.query(
                "orders", {"predicate": {"op": "regex", "attribute": "a", "value": "("}}
            )
    assert info.value.code.name == "INVALID_ARGUMENT" and "regex" in info.value.details


def _slow_dag(map_name: str) -> DagSpec:
    """Every record as its own small batch, so the fragments stay busy while nobody reads."""
    return DagSpec(
        (
            VertexSpec(
                "scan",
                "source",
                {"map": map_name, "fields": [VALUE_COLUMN], "batch_rows": 1},
                1,
                Placement.STORAGE,
            ),
            VertexSpec("out", "forward", {}, 1, Placement.COORDINATOR),
        ),
        (EdgeSpec("scan", "out", routing=Routing.ALL_TO_ONE, queue_size=1),),
    )


async def _start_unread_job(client: QueryDagClient, job_id: str, timeout: float) -> Any:
    stream = client.run_dag(_slow_dag("wide"), job_id=job_id, timeout=timeout)
    first = await stream.__anext__()  # the job is running and its fragments are blocked
    assert len(first)
    return stream


async def test_cancelling_a_job_stops_its_fragments_on_every_node(cluster, wide) -> None:
    async with QueryDagClient(cluster.address, timeout=30) as client:
        stream = await _start_unread_job(client, "to-cancel", 60)
        assert await cluster.running_fragments("to-cancel") == 3
        assert await client.cancel("to-cancel")
        with pytest.raises(QueryDagError) as info:
            async for _ in stream:
                pass
        assert info.value.code.name == "CANCELLED"
        await _eventually(lambda: cluster.running_fragments("to-cancel"), 0)
        assert (await client.status("to-cancel")).state == "cancelled"


async def test_a_timed_out_job_stops_its_fragments_on_every_node(cluster, wide) -> None:
    async with QueryDagClient(cluster.address, timeout=30) as client:
        stream = await _start_unread_job(client, "to-time-out", 1.0)
        await _eventually(lambda: _state(client, "to-time-out"), "failed", timeout=20)
        await _eventually(lambda: cluster.running_fragments("to-time-out"), 0)
        with pytest.raises(QueryDagError) as info:
            async for _ in stream:
                pass
        assert info.value.code.name == "DEADLINE_EXCEEDED"
        assert "timed out" in (await client.status("to-time-out")).error


async def _state(client: QueryDagClient, job_id: str) -> str:
    return (await client.status(job_id)).state


async def _eventually(fetch: Any, want: Any, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await fetch()
        if got == want:
            return
        assert asyncio.get_running_loop().time() < deadline, f"still {got!r}, wanted {want!r}"
        await asyncio.sleep(0.05)


async def test_fragments_of_a_dead_node_are_retried_on_the_backups(tmp_path: Path) -> None:
    c = DagCluster(tmp_path, nodes=3)
    try:
        records = [(f"r{i}", {"g": i % 4, "v": i}) for i in range(600)]
        await c.write("m", records)
        c.nodes["s2"].kill()
        wait_for(lambda: not c.nodes["s2"].alive(), 5)
        query = {"groupBy": ["g"], "aggregations": [{"func": "sum", "field": "v"}]}
        async with QueryDagClient(c.address, timeout=30) as client:
            got = await client.query("m", query, job_id="after-death")
            status = await client.status("after-death")
        assert_same_result(got, evaluate(parse_query(query), records))
        states = {(f.node_id, f.state) for f in status.fragments}
        assert ("s2", "retried") in states
        retried = [f for f in status.fragments if f.attempt == 2]
        assert retried and all(f.node_id != "s2" and f.state == "done" for f in retried)
        assert sum(len(f.partitions) for f in status.fragments if f.state == "done") == 271
    finally:
        c.stop()


def test_query_dag_help_describes_the_service() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "services.query_dag", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0
    assert "--storage-nodes" in out.stdout and "DAG coordinator" in out.stdout
    assert free_port() > 0


_examples = iter(range(1_000_000))


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(recs=datasets(), qf=queries())
def test_any_query_over_real_nodes_answers_like_evaluate(cluster, recs, qf) -> None:
    """Hypothesis writes a fresh map per example, then the coordinator answers a random query
    over it; the answer must equal evaluate() over the same records."""
    query, fields = qf
    map_name = f"prop{next(_examples)}"
    unique = list(dict(recs).items())

    async def go() -> Any:
        if unique:
            await cluster.write(map_name, unique)
        async with QueryDagClient(cluster.address, timeout=30) as client:
            return await client.query(map_name, query, fields, now_ms=NOW, max_results=7)

    got = asyncio.run(go())
    assert_same_result(got, evaluate(parse_query(query, fields), unique, now_ms=NOW, max_results=7))


async def test_fragments_sent_to_a_node_that_does_not_hold_the_partitions_are_retried(
    tmp_path: Path,
) -> None:
    """The coordinator starts with a table whose nodes are swapped (as if partitions had moved):
    nodes refuse partitions they do not hold, the coordinator adopts the nodes' table and runs
    those partitions where they live."""
    storage = StorageNodes(tmp_path)
    nodes = storage.cluster(3)
    swapped = {"s1": nodes["s2"].address, "s2": nodes["s1"].address, "s3": nodes["s3"].address}
    coordinator = start_service(
        "services.query_dag",
        ["--port", "0", "--storage-nodes", ",".join(f"{n}={a}" for n, a in swapped.items())],
    )
    try:
        c = DagCluster.__new__(DagCluster)
        c.nodes = nodes
        c.table = PartitionTable.static(
            list(nodes), backup_count=1, addresses={n: p.address for n, p in nodes.items()}
        )
        records = [(f"r{i}", {"v": i}) for i in range(400)]
        await c.write("moved", records)
        async with QueryDagClient(coordinator.address, timeout=30) as client:
            got = await client.query(
                "moved", {"sort": [{"field": "v", "direction": "desc"}], "limit": 3}, job_id="moved"
            )
            status = await client.status("moved")
        assert [k for k, _ in got.results] == ["r399", "r398", "r397"]
        refused = [f for f in status.fragments if f.state == "retried"]
        assert refused and all("FAILED_PRECONDITION" in f.error for f in refused)
        assert sum(len(f.partitions) for f in status.fragments if f.state == "done") == 271
    finally:
        coordinator.stop()
        storage.stop_all()
