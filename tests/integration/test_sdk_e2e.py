"""The SDK end to end against the real launcher (``python -m services.up``): convergence of two
clients, a cold Merkle sync of 10k records, live queries compared with what the edge sends a raw
client, topics, counters, the partition map, the blocking facade and the command line."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import uuid
from typing import Any

import topgun
from tests.integration.test_sdk_proxy import edge_url, sdk
from tests.support.processes import ROOT
from tests.support.wsclient import WsClient, hlc, lww_put, payload
from tests.unit.test_client_fake_edge import wait_until

__all__ = ["edge_url"]  # the module-scoped launcher fixture, shared with the proxy tests


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def server_root(url: str, map_name: str, *, or_map: bool = False) -> int:
    """The root the edge reports to a raw client's SYNC_INIT."""
    async with await WsClient.connect(url) as raw:
        if or_map:
            await raw.send(
                {"type": "ORMAP_SYNC_INIT", "mapName": map_name, "rootHash": 0, "bucketHashes": {}}
            )
            msg = await raw.expect("ORMAP_SYNC_RESP_ROOT", 10, mapName=map_name)
        else:
            await raw.send({"type": "SYNC_INIT", "mapName": map_name})
            msg = await raw.expect("SYNC_RESP_ROOT", 10, mapName=map_name)
        return int(payload(msg)["rootHash"])


async def test_two_clients_converge_on_an_lww_map_under_concurrent_writes(edge_url: str) -> None:
    name = fresh("lww")
    async with sdk(edge_url) as a, sdk(edge_url) as b:
        ma, mb = a.lww_map(name), b.lww_map(name)
        await a.wait_ready(15)
        await b.wait_ready(15)
        rng = random.Random(1)
        for i in range(300):
            key = f"k{rng.randrange(40)}"
            writer = ma if i % 2 else mb
            if rng.random() < 0.15:
                writer.remove(key)
            else:
                writer.set(key, {"by": "a" if i % 2 else "b", "i": i})
            if i % 50 == 0:
                await asyncio.sleep(0)  # let both clients' batches interleave on the wire
        await a.flush(15)
        await b.flush(15)
        root = await server_root(edge_url, name)
        await wait_until(lambda: ma.root_hash == mb.root_hash == root, 15)
        assert ma.to_dict() == mb.to_dict()


async def test_two_clients_converge_on_an_or_map_under_concurrent_adds_and_removes(
    edge_url: str,
) -> None:
    name = fresh("or")
    async with sdk(edge_url) as a, sdk(edge_url) as b:
        ta, tb = a.or_map(name), b.or_map(name)
        await a.wait_ready(15)
        await b.wait_ready(15)
        for i in range(40):
            ta.add(f"post{i % 5}", f"a{i % 7}")
            tb.add(f"post{i % 5}", f"b{i % 7}")

        def same() -> bool:
            return {k: sorted(v) for k, v in ta.items()} == {k: sorted(v) for k, v in tb.items()}

        await a.flush(15)
        await b.flush(15)
        await wait_until(same, 15)
        expected = {f"{w}{i % 7}" for i in range(40) if i % 5 == 1 for w in "ab"}
        assert set(ta.get("post1")) == expected and "a1" in expected
        tb.remove_value("post1", "a1")  # removes what b has observed from a
        ta.remove("post2")
        await a.flush(15)
        await b.flush(15)
        await wait_until(same, 15)
        assert "a1" not in ta.get("post1")
        assert ta.get("post2") == [] == tb.get("post2")
        assert ta.root_hash == tb.root_hash == await server_root(edge_url, name, or_map=True)


async def test_a_fresh_client_pulls_10k_records_by_merkle_walk_and_ends_at_the_server_root(
    edge_url: str,
) -> None:
    name = fresh("cold")
    async with await WsClient.connect(edge_url) as raw:
        for start in range(0, 10_000, 1000):
            ops = [
                lww_put(name, f"rec-{i}", {"n": i}, timestamp=hlc(counter=i, node_id="seed"))
                for i in range(start, start + 1000)
            ]
            await raw.write_batch(ops, timeout=30)
    root = await server_root(edge_url, name)
    async with sdk(edge_url) as c:
        m = c.lww_map(name)
        await c.wait_synced(name, 60)
        assert len(m) == 10_000
        assert m.get("rec-1234") == {"n": 1234}
        assert m.root_hash == root
        stats = c.sync.stats[name]
        assert stats.complete and stats.records_merged == 10_000


async def test_live_query_snapshots_and_changes_match_what_the_edge_sends(edge_url: str) -> None:
    name = fresh("live")
    query = {"predicate": {"op": "gte", "attribute": "score", "value": 10}}
    async with sdk(edge_url) as writer, sdk(edge_url) as reader:
        w = writer.lww_map(name)
        w.set("a", {"score": 5})
        w.set("b", {"score": 15})
        await writer.flush(15)
        async with await WsClient.connect(edge_url) as raw:
            qid, first = await raw.subscribe(name, query)
            q = reader.query(name, predicate=query["predicate"])
            snap = await q.ready(15)
            assert snap.source == "server"
            assert [(r["key"], r["value"]) for r in first["results"]] == list(snap.rows)
            changes = q.changes()
            w.set("a", {"score": 12})  # ENTER
            w.set("b", {"score": 20})  # UPDATE
            w.set("b", {"score": 1})  # LEAVE
            w.set("c", {"score": 99})  # ENTER
            w.remove("c")  # LEAVE
            await writer.flush(15)
            edge_says = [
                (payload(m)["changeType"], payload(m)["key"], payload(m)["value"])
                for m in await raw.expect_many(
                    lambda m: m.get("type") == "QUERY_UPDATE" and payload(m)["queryId"] == qid,
                    5,
                    15,
                )
            ]
            sdk_says = [
                (ch.kind, ch.key, ch.value) for ch in [await changes.get(15) for _ in range(5)]
            ]
            assert sdk_says == edge_says
            assert [k for k, *_ in edge_says] == ["ENTER", "UPDATE", "LEAVE", "ENTER", "LEAVE"]
            final = await raw.query(name, query)
            assert [(r["key"], r["value"]) for r in final] == list(q.result.rows)
            q.close()


async def test_live_top_n_query_follows_the_edges_window(edge_url: str) -> None:
    name = fresh("topn")
    async with sdk(edge_url) as writer, sdk(edge_url) as reader:
        w = writer.lww_map(name)
        for key, price in [("p1", 30), ("p2", 10), ("p3", 20)]:
            w.set(key, {"price": price})
        await writer.flush(15)
        q = reader.query(name, sort={"price": "asc"}, limit=2, fields=["price"])
        assert (await q.ready(15)).keys() == ["p2", "p3"]
        changes = q.changes()
        w.set("p4", {"price": 5, "extra": "dropped by the projection"})
        await writer.flush(15)
        got = [await changes.get(15), await changes.get(15)]
        assert [(c.kind, c.key) for c in got] == [("LEAVE", "p3"), ("ENTER", "p4")]
        assert q.result.rows == (("p4", {"price": 5}), ("p2", {"price": 10}))
        q.close()


async def test_own_writes_show_in_own_live_query_although_the_edge_does_not_echo_them(
    edge_url: str,
) -> None:
    name = fresh("own")
    async with sdk(edge_url) as c:
        q = c.query(name, where={"done": False})
        await q.ready(15)
        changes = q.changes()
        c.lww_map(name).set("t1", {"done": False})
        first = await changes.get(5)
        assert (first.kind, first.key) == ("ENTER", "t1")
        await c.flush(15)
        res = await c.query_once(name, where={"done": False})
        assert res.keys() == ["t1"]
        q.close()


async def test_topic_messages_reach_other_clients_in_order_but_not_the_publisher(
    edge_url: str,
) -> None:
    topic = fresh("chat")
    async with sdk(edge_url) as pub, sdk(edge_url) as s1, sdk(edge_url) as s2:
        for c in (pub, s1, s2):
            await c.wait_ready(15)
        subs = [s1.subscribe(topic), s2.subscribe(topic)]
        own = pub.subscribe(topic)
        # A probe from s1 proves the subscriptions are registered before the real messages.
        await s1.publish(topic, "probe")
        assert (await subs[1].get(10)).data == "probe"
        assert (await own.get(10)).data == "probe"
        payloads: list[Any] = ["text", 7, True, {"nested": [1, {"x": None}]}, [1, 2], None]
        for p in payloads:
            await pub.publish(topic, p)
        for sub in subs[1:]:
            assert [(await sub.get(10)).data for _ in payloads] == payloads
        assert [(await subs[0].get(10)).data for _ in payloads] == payloads
        assert len(own._feed) == 0  # the publisher's own connection got none of its messages
        for sub in [*subs, own]:
            sub.close()


async def test_counters_and_the_partition_map(edge_url: str) -> None:
    name = fresh("likes")
    async with sdk(edge_url) as a, sdk(edge_url) as b:
        ca, cb = a.counter(name), b.counter(name)
        ca.increment(5)
        cb.decrement(2)
        await wait_until(lambda: ca.value == cb.value == 3, 15)
        pm = await a.partition_map(10)
        assert pm.partition_count == 271
        assert all(pm.owners)
        assert pm.endpoint_of(pm.owner_of("key1"))


def test_blocking_facade_writes_queries_and_subscribes(edge_url: str) -> None:
    name = fresh("blocking")
    with (
        topgun.connect(edge_url, options=topgun.ClientOptions()) as a,
        topgun.connect(edge_url) as b,
    ):
        assert a.status is topgun.Status.READY
        todos = a.lww_map(name)
        todos.set("t1", {"title": "milk", "done": False})
        todos.set("t2", {"title": "eggs", "done": True})
        assert todos.flush(15) in ("APPLIED", "PERSISTED", "REPLICATED")
        assert b.query_once(name, where={"done": False}).keys() == ["t1"]
        mb = b.lww_map(name)
        b.wait_synced(name, 15)
        assert mb.get("t2") == {"title": "eggs", "done": True}
        sub = b.subscribe(fresh("topic"))
        sub.close()


def test_command_line_put_then_get_against_the_launcher(edge_url: str) -> None:
    name = fresh("cli")
    put = subprocess.run(
        [sys.executable, "-m", "topgun", "--url", edge_url, "put", name, "k", '{"v": [1, 2]}'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert put.returncode == 0, put.stderr
    got = subprocess.run(
        [sys.executable, "-m", "topgun", "--url", edge_url, "get", name, "k"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == {"v": [1, 2]}
