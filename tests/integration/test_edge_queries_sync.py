"""Merkle sync, live queries and pub/sub through the launcher (no-auth mode, in-memory storage).

The Merkle tests write TopGun's own vectors (tests/vectors/merkle.json) and check that the edge
reports exactly the roots and buckets the TypeScript client computes for the same records."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import ServiceProcess, start_service
from tests.support.wsclient import (
    WsClient,
    hlc,
    lww_put,
    lww_remove,
    make_token,
    next_op_id,
    or_add,
    or_remove,
    payload,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning"),
]

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def merkle_case(name: str) -> dict[str, Any]:
    cases = json.loads((VECTORS / "merkle.json").read_text())["cases"]
    return next(c for c in cases if c["name"] == name)


@pytest.fixture(scope="module")
def system() -> Iterator[ServiceProcess]:
    svc = start_service(
        "services.up",
        ["--port", "0"],
        env={"TOPGUN_NO_AUTH": "1", "STORAGE_BACKEND": "null", "JWT_SECRET": ""},
        ready_timeout=90,
    )
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def url(system: ServiceProcess) -> str:
    return f"ws://127.0.0.1:{system.port}/ws"


async def client(url: str) -> WsClient:
    return await WsClient.connect(url)


async def seed(c: WsClient, map_name: str, rows: dict[str, Any]) -> None:
    await c.write_batch([lww_put(map_name, k, v) for k, v in rows.items()])


# --- no-auth mode --------------------------------------------------------------------------------


async def test_no_auth_mode_sends_no_auth_required_but_acks_a_token_holder(url: str) -> None:
    c = await WsClient.connect(url)
    try:
        await c.expect_none("AUTH_REQUIRED", within=0.3)
        await c.ping()  # dispatched at once
        await c.send({"type": "AUTH", "token": make_token("carol")})
        assert (await c.expect("AUTH_ACK"))["userId"] == "carol"
    finally:
        await c.close()


async def test_device_hello_gets_a_device_ack_once_per_connection(url: str) -> None:
    c = await client(url)
    try:
        await c.send({"type": "DEVICE_HELLO"})
        ack = await c.expect("DEVICE_ACK")
        assert ack["deviceId"].startswith("dev-") and ack["deviceToken"]
        await c.send({"type": "DEVICE_HELLO", "deviceToken": ack["deviceToken"]})
        await c.expect_none("DEVICE_ACK", within=0.3)
    finally:
        await c.close()


# --- Merkle sync ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case_name", ["single_record", "twelve_records", "hundred_records"])
async def test_lww_root_and_buckets_equal_the_typescript_trees_of_the_vectors(
    url: str, case_name: str
) -> None:
    case = merkle_case(case_name)
    map_name = f"vec-{case_name}"
    c = await client(url)
    try:
        ops = [
            lww_put(map_name, r["key"], {"i": i}, timestamp=r["timestamp"])
            for i, r in enumerate(case["records"])
        ]
        await c.write_batch(ops)
        walk = await c.merkle_walk(map_name)
        assert walk.root == case["root_hash"]
        assert len(walk.records) == len(case["records"])
        for path, node in case.get("nodes", {}).items():
            if "children" in node:
                assert walk.buckets[path] == {k: v for k, v in node["children"].items() if v}, path
        if "buckets_at_root" in case:
            assert walk.buckets[""] == case["buckets_at_root"]
            assert list(walk.buckets[""]) == case["bucket_key_order_at_root"]
    finally:
        await c.close()


async def test_or_map_root_equals_the_typescript_or_tree_of_the_vector(url: str) -> None:
    case = merkle_case("ormap_tree")
    c = await client(url)
    try:
        ops = []
        for entry in case["entries"]:
            for rec in entry["records"]:
                ops.append(
                    {
                        "id": next_op_id(),
                        "mapName": "vec-ormap",
                        "opType": "OR_ADD",
                        "key": entry["key"],
                        "orRecord": rec,
                    }
                )
        await c.write_batch(ops)
        walk = await c.merkle_walk("vec-ormap", or_map=True)
        assert walk.root == case["root_hash"]
        assert sorted(walk.records) == sorted(e["key"] for e in case["entries"])
        tagset2 = walk.records["tagset-2"]
        assert sorted(r["tag"] for r in tagset2["records"]) == sorted(
            r["tag"] for r in next(e for e in case["entries"] if e["key"] == "tagset-2")["records"]
        )
    finally:
        await c.close()


async def test_empty_map_has_root_zero(url: str) -> None:
    c = await client(url)
    try:
        walk = await c.merkle_walk("never-written")
        assert walk.root == 0 and walk.records == {}
    finally:
        await c.close()


async def test_late_joiner_pulls_every_record_and_root_changes_only_with_data(url: str) -> None:
    writer, joiner = await client(url), await client(url)
    try:
        await seed(writer, "late-join", {f"item-{i}": {"n": i} for i in range(12)})
        first = await joiner.merkle_walk("late-join")
        assert first.values() == {f"item-{i}": {"n": i} for i in range(12)}
        again = await joiner.merkle_walk("late-join")
        assert again.root == first.root
        await writer.write(lww_put("late-join", "item-0", {"n": 100}))
        changed = await joiner.merkle_walk("late-join")
        assert changed.root != first.root and changed.values()["item-0"] == {"n": 100}
    finally:
        await writer.close()
        await joiner.close()


async def test_or_map_walk_carries_tombstones_and_push_diff_merges_without_a_reply(
    url: str,
) -> None:
    a, b = await client(url), await client(url)
    try:
        keep = or_add("or-sync", "k", "keep")
        drop = or_add("or-sync", "k", "drop", timestamp=hlc(int(time.time() * 1000) + 1))
        await a.write_batch([keep, drop])
        await a.write(or_remove("or-sync", "k", drop["orRecord"]["tag"]))
        walk = await b.merkle_walk("or-sync", or_map=True)
        entry = walk.records["k"]
        assert [r["value"] for r in entry["records"]] == ["keep"]
        assert entry["tombstones"] == [drop["orRecord"]["tag"]]
        pushed = or_add(
            "or-sync", "k", "from-b", timestamp=hlc(int(time.time() * 1000) + 2, 0, "b")
        )["orRecord"]
        await b.send(
            {
                "type": "ORMAP_PUSH_DIFF",
                "payload": {
                    "mapName": "or-sync",
                    "entries": [
                        {"key": "k", "records": [pushed], "tombstones": [keep["orRecord"]["tag"]]}
                    ],
                },
            }
        )
        await b.send(
            {"type": "ORMAP_DIFF_REQUEST", "payload": {"mapName": "or-sync", "keys": ["k", "nope"]}}
        )
        diff = payload(await b.expect("ORMAP_DIFF_RESPONSE"))
        k, nope = diff["entries"]
        assert [r["value"] for r in k["records"]] == ["from-b"]
        assert sorted(k["tombstones"]) == sorted([keep["orRecord"]["tag"], drop["orRecord"]["tag"]])
        assert nope == {"key": "nope", "records": [], "tombstones": []}
        assert not [m for m in b.drain() if m["type"] == "OP_ACK"]
    finally:
        await a.close()
        await b.close()


async def test_bad_merkle_path_gets_an_error(url: str) -> None:
    c = await client(url)
    try:
        await c.send({"type": "MERKLE_REQ_BUCKET", "payload": {"mapName": "m", "path": "xyz1"}})
        assert payload(await c.expect("ERROR"))["code"] == 400
    finally:
        await c.close()


# --- queries -------------------------------------------------------------------------------------

PRODUCTS = {
    "p-1": {"name": "Cheap", "price": 10, "category": "a"},
    "p-2": {"name": "Mid", "price": 50, "category": "b"},
    "p-3": {"name": "Pricey", "price": 100, "category": "a"},
    "p-4": {"name": "Expensive", "price": 200, "category": "b"},
    "p-5": {"name": "Premium", "price": 500, "category": "a"},
}


@pytest.fixture
async def products(url: str, request: pytest.FixtureRequest) -> str:
    map_name = f"products-{request.node.name}"[:120]
    c = await client(url)
    try:
        await seed(c, map_name, PRODUCTS)
    finally:
        await c.close()
    return map_name


def keys(rows: list[dict[str, Any]]) -> list[str]:
    return [r["key"] for r in rows]


async def test_query_snapshot_where_predicates_and_both_sort_shapes(
    url: str, products: str
) -> None:
    c = await client(url)
    try:
        assert sorted(keys(await c.query(products))) == sorted(PRODUCTS)
        assert keys(await c.query(products, {"where": {"category": "b"}})) == ["p-2", "p-4"]
        for op, value, expected in [
            ("gt", 100, ["p-4", "p-5"]),
            ("gte", 100, ["p-3", "p-4", "p-5"]),
            ("lt", 50, ["p-1"]),
            ("lte", 50, ["p-1", "p-2"]),
            ("neq", 10, ["p-2", "p-3", "p-4", "p-5"]),
        ]:
            rows = await c.query(
                products, {"predicate": {"op": op, "attribute": "price", "value": value}}
            )
            assert sorted(keys(rows)) == expected, op
        desc = await c.query(products, {"sort": [{"field": "price", "direction": "desc"}]})
        assert keys(desc) == ["p-5", "p-4", "p-3", "p-2", "p-1"]
        asc = await c.query(products, {"sort": {"price": "asc"}})
        assert keys(asc) == ["p-1", "p-2", "p-3", "p-4", "p-5"]
        two = await c.query(
            products,
            {
                "sort": [
                    {"field": "category", "direction": "asc"},
                    {"field": "price", "direction": "desc"},
                ]
            },
        )
        assert keys(two) == ["p-5", "p-3", "p-1", "p-4", "p-2"]
    finally:
        await c.close()


async def test_query_limit_projection_and_no_merkle_root(url: str, products: str) -> None:
    c = await client(url)
    try:
        _, resp = await c.subscribe(
            products,
            {
                "predicate": {"op": "gt", "attribute": "price", "value": 20},
                "sort": [{"field": "price", "direction": "asc"}],
                "limit": 2,
            },
            fields=["name"],
        )
        assert resp["results"] == [
            {"key": "p-2", "value": {"name": "Mid"}},
            {"key": "p-3", "value": {"name": "Pricey"}},
        ]
        assert resp["hasMore"] is True and "nextCursor" in resp
        assert "merkleRootHash" not in resp
        rest = await c.query(
            products,
            {
                "sort": [{"field": "price", "direction": "asc"}],
                "limit": 10,
                "cursor": resp["nextCursor"],
                "predicate": {"op": "gt", "attribute": "price", "value": 20},
            },
        )
        assert keys(rest) == ["p-4", "p-5"]
    finally:
        await c.close()


async def test_group_by_returns_count_and_requested_sums_only(url: str, products: str) -> None:
    c = await client(url)
    try:
        rows = await c.query(
            products,
            {
                "groupBy": ["category"],
                "aggregations": [{"func": "count"}, {"func": "sum", "field": "price"}],
            },
        )
        groups = {r["value"]["category"]: r["value"] for r in rows}
        assert groups["a"]["__count"] == 3 and groups["a"]["__sum_price"] == 610
        assert groups["b"]["__count"] == 2 and groups["b"]["__sum_price"] == 250
        for g in groups.values():
            assert {k for k in g if k.startswith("__")} == {"__key", "__count", "__sum_price"}
    finally:
        await c.close()


async def test_a_malformed_query_is_answered_with_an_empty_result_and_an_error(url: str) -> None:
    c = await client(url)
    try:
        _, resp = await c.subscribe("bad-query", {"predicate": "not-a-node"})
        assert resp["results"] == [] and resp["error"]
    finally:
        await c.close()


async def test_live_query_gets_enter_update_leave_from_another_clients_writes(url: str) -> None:
    watcher, writer = await client(url), await client(url)
    try:
        qid, resp = await watcher.subscribe(
            "live", {"predicate": {"op": "gte", "attribute": "n", "value": 10}}
        )
        assert resp["results"] == []
        await writer.write(lww_put("live", "k", {"n": 20}))
        ev = payload(await watcher.expect("QUERY_UPDATE", queryId=qid))
        assert (ev["changeType"], ev["key"], ev["value"]) == ("ENTER", "k", {"n": 20})
        await writer.write(lww_put("live", "k", {"n": 30}))
        assert payload(await watcher.expect("QUERY_UPDATE", queryId=qid))["changeType"] == "UPDATE"
        await writer.write(lww_put("live", "k", {"n": 1}))
        ev = payload(await watcher.expect("QUERY_UPDATE", queryId=qid))
        assert (ev["changeType"], ev["value"]) == ("LEAVE", None)
        await writer.write(lww_put("live", "k2", {"n": 50}))
        await watcher.expect("QUERY_UPDATE", queryId=qid, key="k2", changeType="ENTER")
        await writer.write(lww_remove("live", "k2"))
        await watcher.expect("QUERY_UPDATE", queryId=qid, key="k2", changeType="LEAVE")
        await writer.expect_none("QUERY_UPDATE", within=0.2)
    finally:
        await watcher.close()
        await writer.close()


async def test_limit_window_sends_leave_then_enter_when_a_row_is_displaced(url: str) -> None:
    watcher, writer = await client(url), await client(url)
    try:
        await seed(writer, "window", {"a": {"rank": 1}, "b": {"rank": 2}, "z": {"rank": 9}})
        qid, resp = await watcher.subscribe(
            "window", {"sort": [{"field": "rank", "direction": "asc"}], "limit": 2}
        )
        assert keys(resp["results"]) == ["a", "b"]
        await writer.write(lww_put("window", "y", {"rank": 8}))  # outside the window: nothing
        await writer.write(lww_put("window", "c", {"rank": 0}))
        leave = payload(await watcher.expect("QUERY_UPDATE", queryId=qid))
        enter = payload(await watcher.expect("QUERY_UPDATE", queryId=qid))
        assert (leave["changeType"], leave["key"]) == ("LEAVE", "b")
        assert (enter["changeType"], enter["key"]) == ("ENTER", "c")
        await watcher.expect_none("QUERY_UPDATE", within=0.3)
        await writer.write(lww_remove("window", "c"))
        assert payload(await watcher.expect("QUERY_UPDATE", queryId=qid))["key"] == "c"
        promoted = payload(await watcher.expect("QUERY_UPDATE", queryId=qid))
        assert (promoted["changeType"], promoted["key"]) == ("ENTER", "b")
    finally:
        await watcher.close()
        await writer.close()


async def test_two_queries_get_only_their_own_updates_and_unsub_stops_delivery(url: str) -> None:
    watcher, writer = await client(url), await client(url)
    try:
        cheap, _ = await watcher.subscribe(
            "two-q", {"predicate": {"op": "lt", "attribute": "p", "value": 10}}
        )
        dear, _ = await watcher.subscribe(
            "two-q", {"predicate": {"op": "gte", "attribute": "p", "value": 10}}
        )
        await writer.write(lww_put("two-q", "x", {"p": 5}))
        await writer.write(lww_put("two-q", "y", {"p": 50}))
        assert payload(await watcher.expect("QUERY_UPDATE", queryId=cheap))["key"] == "x"
        assert payload(await watcher.expect("QUERY_UPDATE", queryId=dear))["key"] == "y"
        await watcher.send({"type": "QUERY_UNSUB", "payload": {"queryId": cheap}})
        await watcher.ping()
        await writer.write(lww_put("two-q", "z", {"p": 1}))
        await watcher.expect_none(
            lambda m: m["type"] == "QUERY_UPDATE" and payload(m)["queryId"] == cheap, within=0.5
        )
    finally:
        await watcher.close()
        await writer.close()


async def test_updates_from_two_writers_reach_the_subscriber(url: str) -> None:
    watcher, w1, w2 = await client(url), await client(url), await client(url)
    try:
        await watcher.subscribe("two-writers")
        await asyncio.gather(
            w1.write(lww_put("two-writers", "a", 1)), w2.write(lww_put("two-writers", "b", 2))
        )
        got = {payload(m)["key"] for m in await watcher.expect_many("QUERY_UPDATE", 2)}
        assert got == {"a", "b"}
    finally:
        await asyncio.gather(watcher.close(), w1.close(), w2.close())


async def test_a_write_during_the_snapshot_shows_up_in_it_or_as_an_update(url: str) -> None:
    watcher, writer = await client(url), await client(url)
    try:
        await seed(writer, "race", {f"k{i}": {"i": i} for i in range(300)})
        burst = [lww_put("race", f"new-{i}", {"i": i}) for i in range(50)]
        sub = asyncio.create_task(watcher.subscribe("race"))
        await writer.write_batch(burst)
        qid, resp = await sub
        seen = set(keys(resp["results"]))
        missing = {op["key"] for op in burst} - seen
        while missing:
            m = await watcher.expect("QUERY_UPDATE", queryId=qid)
            missing.discard(payload(m)["key"])
        assert not missing
    finally:
        await watcher.close()
        await writer.close()


# --- topics --------------------------------------------------------------------------------------


async def test_topic_messages_reach_every_subscriber_except_the_publisher_in_order(
    url: str,
) -> None:
    pub, s1, s2, other = await asyncio.gather(*(client(url) for _ in range(4)))
    try:
        for c in (pub, s1, s2):
            await c.send({"type": "TOPIC_SUB", "payload": {"topic": "chat:room-1"}})
        await other.send({"type": "TOPIC_SUB", "payload": {"topic": "chat:room-2"}})
        for c in (pub, s1, s2, other):
            await c.ping()
        payloads: list[Any] = ["text", 42, True, {"nested": {"a": [1, 2]}}, [1, "two"], None]
        payloads += [f"msg-{i}" for i in range(10)]
        for data in payloads:
            await pub.send({"type": "TOPIC_PUB", "payload": {"topic": "chat:room-1", "data": data}})
        for s in (s1, s2):
            got = [payload(m) for m in await s.expect_many("TOPIC_MESSAGE", len(payloads))]
            assert [g["data"] for g in got] == payloads
            assert all(g["topic"] == "chat:room-1" and g["timestamp"] > 0 for g in got)
        await pub.expect_none("TOPIC_MESSAGE", within=0.3)
        await other.expect_none("TOPIC_MESSAGE", within=0.05)
    finally:
        await asyncio.gather(*(c.close() for c in (pub, s1, s2, other)))


async def test_topic_unsub_stops_delivery_and_bad_topic_names_are_refused(url: str) -> None:
    pub, sub = await client(url), await client(url)
    try:
        await sub.send({"type": "TOPIC_SUB", "payload": {"topic": "news"}})
        await sub.ping()
        await pub.send({"type": "TOPIC_PUB", "payload": {"topic": "news", "data": 1}})
        await sub.expect("TOPIC_MESSAGE")
        await sub.send({"type": "TOPIC_UNSUB", "payload": {"topic": "news"}})
        await sub.ping()
        await pub.send({"type": "TOPIC_PUB", "payload": {"topic": "news", "data": 2}})
        await sub.expect_none("TOPIC_MESSAGE", within=0.4)
        await pub.send({"type": "TOPIC_SUB", "payload": {"topic": "bad topic!"}})
        assert payload(await pub.expect("ERROR"))["code"] == 400
    finally:
        await pub.close()
        await sub.close()
