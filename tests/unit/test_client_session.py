"""The SDK against an in-process fake edge: auth paths, reconnects, the op log, Merkle sync,
live queries, topics, counters and bad frames."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgpack
import pytest

from libs.client import (
    ClientOptions,
    ConnectionOptions,
    Status,
    TopGunClient,
)
from tests.unit.test_client_fake_edge import FakeEdge, pack, server_batch, wait_until

FAST = ClientOptions(
    connection=ConnectionOptions(
        backoff_base=0.02, backoff_max=0.1, device_grace=0.05, ping_interval=0.2
    ),
    sync_stall_timeout=5.0,
)


def client(url: str, **kw: object) -> TopGunClient:
    kw.setdefault("options", FAST)
    return TopGunClient(url, **kw)  # type: ignore[arg-type]


async def test_write_is_applied_locally_at_once_and_acked_by_the_server() -> None:
    async with FakeEdge() as edge, client(edge.url) as c:
        todos = c.lww_map("todos")
        op = todos.set("t1", {"title": "milk"})
        assert todos.get("t1") == {"title": "milk"}
        assert c.pending_ops == 1
        level = await c.wait_acked(op, timeout=5)
        assert level == "APPLIED"
        assert c.pending_ops == 0
        assert edge.lww["todos"].get("t1") == {"title": "milk"}


async def test_tokenless_client_sends_device_hello_and_proceeds_on_a_no_auth_server() -> None:
    async with FakeEdge() as edge, client(edge.url) as c:
        await c.wait_ready(5)
        assert edge.frames_in[0] == "DEVICE_HELLO"
        assert edge.auth_attempts == []


async def test_token_client_authenticates_and_answers_auth_required_again() -> None:
    async with FakeEdge(token="good") as edge, client(edge.url, token="good") as c:
        await c.wait_ready(5)
        assert c.user_id == "user-1"
        # AUTH on open, and again when AUTH_REQUIRED arrives (as TopGun's client does).
        assert edge.auth_attempts == ["good", "good"]


async def test_auth_fail_calls_the_token_provider_again_on_the_next_attempt() -> None:
    tokens = iter(["bad", "good"])
    asked: list[str] = []

    async def provider() -> str:
        t = next(tokens)
        asked.append(t)
        return t

    async with FakeEdge(token="good") as edge, client(edge.url, token_provider=provider) as c:
        await c.wait_ready(5)
        assert asked == ["bad", "good"]
        assert edge.auth_attempts[0] == "bad"


async def test_tokenless_client_parks_on_auth_required_until_a_token_is_set() -> None:
    statuses: list[Status] = []
    async with FakeEdge(token="good") as edge, client(edge.url, on_status=statuses.append) as c:
        await wait_until(
            lambda: any(m.get("type") == "DEVICE_HELLO" for k in edge.conns for m in k.received)
        )
        await wait_until(lambda: c.status is Status.AUTHENTICATING)
        c.set_token("good")
        await c.wait_ready(5)
        assert edge.auth_attempts == ["good"]
        assert Status.CONNECTING in statuses and Status.READY in statuses


async def test_writes_made_offline_are_sent_once_the_server_appears() -> None:
    edge = FakeEdge()
    await edge.start()
    port = edge.port
    await edge.stop()
    async with client(f"ws://127.0.0.1:{port}/ws") as c:
        m = c.lww_map("offline")
        ops = [m.set(f"k{i}", i) for i in range(50)]
        await wait_until(lambda: c.status is Status.OFFLINE)
        assert c.pending_ops == 50
        edge2 = FakeEdge(port=port)
        await edge2.start()
        try:
            await c.wait_acked(ops[-1], timeout=5)
            assert edge2.lww["offline"].get("k49") == 49
        finally:
            await edge2.stop()


async def test_unacked_ops_survive_a_restart_of_the_client_through_the_store(
    tmp_path: Path,
) -> None:
    store = tmp_path / "replica.db"
    edge = FakeEdge()
    await edge.start()
    edge.ack = False  # the server applies but never acknowledges
    async with client(edge.url, store=store) as c:
        c.lww_map("m").set("a", 1)
        c.or_map("tags").add("p", "red")
        await wait_until(lambda: edge.ops_applied == 2)
        assert c.pending_ops == 2
    await edge.stop()
    edge2 = FakeEdge()
    await edge2.start()
    try:
        async with client(edge2.url, store=store) as c2:
            assert c2.pending_ops == 2
            assert c2.lww_map("m").get("a") == 1  # the replica came back from the store
            assert c2.or_map("tags").get("p") == ["red"]
            await c2.flush(timeout=5)
            assert edge2.lww["m"].get("a") == 1
            assert edge2.ormaps["tags"].get("p") == ["red"]
        async with client(edge2.url, store=store) as c3:
            assert c3.pending_ops == 0
    finally:
        await edge2.stop()


async def test_unacked_ops_are_resent_after_a_reconnect() -> None:
    async with FakeEdge() as edge, client(edge.url) as c:
        await c.wait_ready(5)
        edge.ack = False
        op = c.lww_map("m").set("a", 1)
        await wait_until(lambda: edge.ops_applied == 1)
        edge.ack = True
        await edge.drop_connections()
        await c.wait_acked(op, timeout=5)
        assert edge.ops_applied == 2  # sent twice, applied idempotently
        assert edge.lww["m"].get("a") == 1


async def test_ops_refused_with_a_server_error_are_sent_again_after_a_backoff() -> None:
    opts = ClientOptions(connection=FAST.connection, rate_limit_retry=0.05)
    async with FakeEdge() as edge, client(edge.url, options=opts) as c:
        await c.wait_ready(5)
        edge.fail_batches = 2
        op = c.lww_map("m").set("a", 1)
        await c.wait_acked(op, timeout=5)
        assert edge.frames_in.count("OP_BATCH") == 3
        assert c.conn.sessions == 1  # no reconnect was needed


async def test_fresh_client_pulls_a_map_by_merkle_walk_and_matches_the_server_root() -> None:
    async with FakeEdge() as edge:
        edge.seed("big", {f"key-{i}": {"n": i} for i in range(600)})
        async with client(edge.url) as c:
            m = c.lww_map("big")
            await c.wait_ready(10)
            assert len(m) == 600
            assert m.root_hash == edge.lww["big"].merkle.root
            assert m.get("key-7") == {"n": 7}


async def test_merkle_walk_asks_only_for_buckets_that_differ() -> None:
    async with FakeEdge() as edge:
        edge.seed("m", {f"k{i}": i for i in range(300)})
        async with client(edge.url) as c:
            c.lww_map("m")
            await c.wait_ready(10)
        requests_first = edge.frames_in.count("MERKLE_REQ_BUCKET")
        edge.frames_in.clear()
        edge.lww_map("m").set("k1", "changed")
        async with client(edge.url) as c:
            m = c.lww_map("m")
            m.merge_many(
                [(k, r.to_wire()) for k, r in edge.lww["m"].records().items() if k != "k1"]
            )
            await c.wait_ready(10)
            assert m.get("k1") == "changed"
            assert m.root_hash == edge.lww["m"].merkle.root
        # one path per level down to the single changed leaf
        assert edge.frames_in.count("MERKLE_REQ_BUCKET") == 4
        assert requests_first > 4


async def test_or_map_converges_between_two_clients_with_concurrent_adds_and_removes() -> None:
    async with FakeEdge() as edge, client(edge.url) as a, client(edge.url) as b:
        ta, tb = a.or_map("tags"), b.or_map("tags")
        await a.wait_ready(5)
        await b.wait_ready(5)
        ta.add("post", "red")
        tb.add("post", "blue")
        ta.add("post", "green")
        await a.flush(5)
        await b.flush(5)
        tb.remove_value("post", "blue")
        await b.flush(5)
        await wait_until(
            lambda: sorted(ta.get("post")) == sorted(tb.get("post")) == ["green", "red"]
        )
        assert ta.root_hash == tb.root_hash == edge.ormaps["tags"].merkle.root


async def test_server_events_keep_a_second_client_replica_current() -> None:
    async with FakeEdge() as edge, client(edge.url) as a, client(edge.url) as b:
        ma, mb = a.lww_map("shared"), b.lww_map("shared")
        await a.wait_ready(5)
        await b.wait_ready(5)
        ma.set("x", 1)
        mb.set("y", 2)
        await wait_until(lambda: ma.get("y") == 2 and mb.get("x") == 1)
        assert ma.root_hash == mb.root_hash


async def test_live_query_gives_the_local_answer_first_then_the_server_answer() -> None:
    async with FakeEdge() as edge:
        edge.seed("users", {"u1": {"age": 30}, "u2": {"age": 40}})
        async with client(edge.url) as c:
            users = c.lww_map("users")
            users.set("u3", {"age": 30})
            q = c.query("users", where={"age": 30})
            first = q.result
            assert first.source == "local" and first.keys() == ["u3"]
            res = await q.ready(5)
            assert res.source == "server"
            assert res.keys() == ["u1", "u3"]  # u3 is pending: overlaid on the server answer
            changes = q.changes()
            users.set("u4", {"age": 30})
            users.set("u3", {"age": 31})
            got = [await changes.get(2), await changes.get(2)]
            assert [(ch.kind, ch.key) for ch in got] == [("ENTER", "u4"), ("LEAVE", "u3")]
            q.close()


async def test_query_with_limit_keeps_its_window_on_local_writes() -> None:
    async with FakeEdge() as edge, client(edge.url) as c:
        m = c.lww_map("p")
        for i, price in enumerate([5, 1, 9]):
            m.set(f"p{i}", {"price": price})
        q = c.query("p", sort={"price": "asc"}, limit=2)
        assert q.result.keys() == ["p1", "p0"]
        assert (await q.ready(5)).keys() == ["p1", "p0"]
        changes = q.changes()
        m.set("p3", {"price": 0})
        got = [await changes.get(2), await changes.get(2)]
        assert [(ch.kind, ch.key) for ch in got] == [("LEAVE", "p0"), ("ENTER", "p3")]
        assert q.result.keys() == ["p3", "p1"]
        m.set("p4", {"price": 100})  # outside the window: nothing visible changes
        assert len(changes) == 0
        q.close()


async def test_topic_messages_reach_other_subscribers_and_offline_publishes_are_queued() -> None:
    async with FakeEdge() as edge, client(edge.url) as a, client(edge.url) as b:
        await a.wait_ready(5)
        await b.wait_ready(5)
        sub = b.subscribe("chat")
        await wait_until(lambda: any("chat" in k.topics for k in edge.conns))
        await a.publish("chat", {"text": "hi"})
        await a.publish("chat", None)
        m1 = await sub.get(5)
        m2 = await sub.get(5)
        assert (m1.data, m2.data) == ({"text": "hi"}, None)
        sub.close()
    async with client("ws://127.0.0.1:1/ws") as offline:
        await offline.publish("chat", 1)
        assert offline.topics.queued == 1


async def test_counter_merges_with_the_server_and_reaches_another_client() -> None:
    async with FakeEdge() as edge, client(edge.url) as a, client(edge.url) as b:
        ca, cb = a.counter("likes"), b.counter("likes")
        ca.increment(5)
        cb.decrement(2)
        await wait_until(lambda: ca.value == cb.value == 3)


async def test_partition_map_lists_an_owner_for_every_partition() -> None:
    async with FakeEdge() as edge, client(edge.url) as c:
        await c.wait_ready(5)
        pm = await c.partition_map(5)
        assert pm.partition_count == 271 and len(pm.owners) == 271
        assert pm.owner_of("key1") == "node-0"


GARBAGE = [
    b"\xc1\xc1\xc1",  # not MsgPack
    pack([1, 2, 3]),  # not a map
    pack({"type": "NO_SUCH_TYPE"}),
    pack({"type": "OP_ACK", "payload": "nope"}),
    pack({"type": "SERVER_EVENT", "payload": {"mapName": 3}}),
    pack(
        {"type": "SYNC_RESP_BUCKETS", "payload": {"mapName": "m", "path": "", "buckets": {"zz": 1}}}
    ),
    pack({"type": "QUERY_UPDATE", "payload": {"queryId": "q", "key": "k", "changeType": "BOGUS"}}),
    pack({"type": "BATCH", "count": 5, "data": b"\x05\x00"}),
    pack(
        {
            "type": "SERVER_EVENT",
            "payload": {
                "mapName": "m",
                "eventType": "PUT",
                "key": "k",
                "record": {"value": 1, "timestamp": {"millis": "x"}},
            },
        }
    ),
    msgpack.packb(
        {
            "type": "SERVER_EVENT",
            "payload": {
                "mapName": "m",
                "eventType": "PUT",
                "key": "k",
                "record": {"value": 1, "timestamp": {"millis": 1, "counter": 0, "nodeId": 7}},
            },
        }
    ),
]


async def test_garbage_frames_are_dropped_and_the_session_keeps_working() -> None:
    async with FakeEdge() as edge:
        edge.garbage_after_auth = GARBAGE
        async with client(edge.url) as c:
            m = c.lww_map("m")
            await c.wait_ready(5)
            op = m.set("k", "v")
            await c.wait_acked(op, 5)
            assert c.conn.bad_frames >= len(GARBAGE)
            assert c.conn.sessions == 1  # never reconnected
            assert c.status is Status.READY


async def test_batch_envelopes_from_the_server_are_unpacked_in_order() -> None:
    async with FakeEdge(batch_replies=True) as edge:
        edge.seed("m", {f"k{i}": i for i in range(40)})
        async with client(edge.url) as c:
            m = c.lww_map("m")
            await c.wait_ready(10)
            assert m.root_hash == edge.lww["m"].merkle.root
        assert server_batch([{"type": "PONG", "timestamp": 1}])  # the helper builds valid frames


async def test_close_is_prompt_while_the_server_is_unreachable() -> None:
    c = client("ws://127.0.0.1:1/ws")
    await c.open()
    await wait_until(lambda: c.status is Status.OFFLINE)
    await asyncio.wait_for(c.close(), 2)


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    import random

    opts = ConnectionOptions(backoff_base=1.0, backoff_factor=2.0, backoff_max=30.0)
    rng = random.Random(7)
    delays = [opts.backoff(a, rng) for a in range(1, 9)]
    for attempt, d in enumerate(delays, start=1):
        raw = min(30.0, 2 ** (attempt - 1))
        assert 0.5 * raw <= d <= 1.5 * raw
    assert max(delays) <= 45.0


@pytest.mark.parametrize("bad", [b"", b"\x00"])
async def test_empty_or_scalar_frames_count_as_bad_frames(bad: bytes) -> None:
    async with FakeEdge() as edge:
        edge.garbage_after_auth = [bad]
        async with client(edge.url) as c:
            await c.wait_ready(5)
            await wait_until(lambda: c.conn.bad_frames >= 1)
