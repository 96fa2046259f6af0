"""Two edges in front of the same three storage nodes: what one client writes or publishes through
one edge reaches clients of the other, with no process shared but the storage nodes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import pytest

from tests.support.processes import ServiceProcess, free_port, start_service
from tests.support.wsclient import WsClient, lww_put, payload

pytestmark = pytest.mark.integration


class Cluster:
    def __init__(self, storage: list[ServiceProcess], edges: list[ServiceProcess]) -> None:
        self.storage = storage
        self.edges = edges

    def url(self, i: int) -> str:
        return f"ws://127.0.0.1:{self.edges[i].port}/ws"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    started: list[Future[ServiceProcess]] = []
    with ThreadPoolExecutor(3) as pool:  # start side by side: each takes a while on 2 cores

        def start(module: str, args: list[str], **kw: Any) -> Future[ServiceProcess]:
            fut = pool.submit(start_service, module, args, **kw)
            started.append(fut)
            return fut

        try:
            ports = [free_port() for _ in range(3)]
            peers = ",".join(f"n{i + 1}=127.0.0.1:{p}" for i, p in enumerate(ports))
            storage = [
                start(
                    "services.storage",
                    [
                        "--node-id",
                        f"n{i + 1}",
                        "--port",
                        str(p),
                        "--peers",
                        peers,
                        "--storage",
                        "memory",
                    ],
                )
                for i, p in enumerate(ports)
            ]
            edge_ports = [free_port() for _ in range(2)]
            urls = [f"ws://127.0.0.1:{p}" for p in edge_ports]
            wait(storage)
            edges = [
                start(
                    "services.edge",
                    [
                        "--port",
                        str(p),
                        "--edge-id",
                        f"edge-{i + 1}",
                        "--no-auth",
                        "--storage-nodes",
                        peers,
                        "--peer-edges",
                        ",".join(u for u in urls if u != f"ws://127.0.0.1:{p}"),
                    ],
                    env={"JWT_SECRET": ""},
                )
                for i, p in enumerate(edge_ports)
            ]
            yield Cluster([f.result() for f in storage], [f.result() for f in edges])
        finally:
            wait(started)
            for fut in reversed(started):
                if fut.exception() is None:
                    fut.result().stop()


async def test_a_write_acked_by_one_edge_is_visible_to_a_client_of_the_other(
    cluster: Cluster,
) -> None:
    a = await WsClient.connect(cluster.url(0))
    b = await WsClient.connect(cluster.url(1))
    try:
        qid, _ = await b.subscribe("cross")
        await a.write(lww_put("cross", "k", {"from": "edge-1"}))
        ev = payload(await b.expect("SERVER_EVENT"))
        assert ev["key"] == "k" and ev["record"]["value"] == {"from": "edge-1"}
        upd = payload(await b.expect("QUERY_UPDATE", queryId=qid))
        assert (upd["changeType"], upd["key"]) == ("ENTER", "k")
        assert await b.query("cross") == [{"key": "k", "value": {"from": "edge-1"}}]
        assert (await a.merkle_walk("cross")).root == (await b.merkle_walk("cross")).root
    finally:
        await a.close()
        await b.close()


async def test_topic_messages_cross_edges_in_publish_order(cluster: Cluster) -> None:
    pub = await WsClient.connect(cluster.url(0))
    subs = [await WsClient.connect(cluster.url(i)) for i in (0, 1)]
    try:
        for s in subs:
            await s.send({"type": "TOPIC_SUB", "payload": {"topic": "cross-topic"}})
            await s.ping()
        for i in range(10):
            await pub.send({"type": "TOPIC_PUB", "payload": {"topic": "cross-topic", "data": i}})
        for s in subs:
            got = [payload(m)["data"] for m in await s.expect_many("TOPIC_MESSAGE", 10)]
            assert got == list(range(10))
    finally:
        await asyncio.gather(pub.close(), *(s.close() for s in subs))


async def test_counter_updates_cross_edges(cluster: Cluster) -> None:
    a = await WsClient.connect(cluster.url(0))
    b = await WsClient.connect(cluster.url(1))
    try:
        await b.send({"type": "COUNTER_REQUEST", "payload": {"name": "cross-counter"}})
        await b.expect("COUNTER_RESPONSE")
        state = {"positive": {"a": 3}, "negative": {}}
        await a.send({"type": "COUNTER_SYNC", "payload": {"name": "cross-counter", "state": state}})
        await a.expect("COUNTER_UPDATE")
        got = payload(await b.expect("COUNTER_UPDATE"))
        assert got["state"]["positive"] == {"a": 3}
    finally:
        await a.close()
        await b.close()


async def test_partition_map_lists_both_edges(cluster: Cluster) -> None:
    c = await WsClient.connect(cluster.url(1))
    try:
        await c.send({"type": "PARTITION_MAP_REQUEST"})
        pm = payload(await c.expect("PARTITION_MAP"))
        endpoints = sorted(n["endpoints"]["websocket"] for n in pm["nodes"])
        assert endpoints == sorted(f"ws://127.0.0.1:{e.port}" for e in cluster.edges)
        owners = {p["ownerNodeId"] for p in pm["partitions"]}
        assert owners == {n["nodeId"] for n in pm["nodes"]}
    finally:
        await c.close()
