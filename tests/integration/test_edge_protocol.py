"""The edge end to end through the launcher (`python -m services.up`, JWT mode, in-memory storage):
handshake and auth, heartbeat, writes and their acknowledgements, map events, limits and abuse,
HTTP endpoints. Everything goes over real WebSocket/HTTP to real processes."""

from __future__ import annotations

import asyncio
import json
import random
import struct
import time
from collections.abc import Iterator

import aiohttp
import msgpack
import pytest

from tests.support.processes import ServiceProcess, start_service
from tests.support.wsclient import (
    TEST_SECRET,
    WsClient,
    encode,
    hlc,
    inbound_batch,
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


@pytest.fixture(scope="module")
def system() -> Iterator[ServiceProcess]:
    svc = start_service(
        "services.up",
        ["--port", "0"],
        env={
            "JWT_SECRET": TEST_SECRET,
            "STORAGE_BACKEND": "null",
            "TOPGUN_NO_AUTH": "",
            # a small rate budget, so the rate-limit tests stay cheap
            "TOPGUN_RATE_OPS": "2000",
            "TOPGUN_RATE_BURST": "4000",
        },
        ready_timeout=90,
    )
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def url(system: ServiceProcess) -> str:
    return f"ws://127.0.0.1:{system.port}/ws"


@pytest.fixture
def http(system: ServiceProcess) -> str:
    return f"http://127.0.0.1:{system.port}"


async def authed(url: str, user: str = "user-0") -> WsClient:
    return await WsClient.connect(url, token=make_token(user))


# --- handshake and auth --------------------------------------------------------------------------


async def test_jwt_mode_sends_auth_required_and_acks_a_valid_token_with_user_id(url: str) -> None:
    c = await WsClient.connect(url)
    try:
        await c.expect("AUTH_REQUIRED")
        await c.send({"type": "AUTH", "token": make_token("alice")})
        ack = await c.expect("AUTH_ACK")
        assert ack["userId"] == "alice"
    finally:
        await c.close()


async def test_root_path_also_accepts_websocket_upgrades(system: ServiceProcess) -> None:
    c = await WsClient.connect(f"ws://127.0.0.1:{system.port}/", token=make_token("root"))
    try:
        assert c.user_id == "root"
    finally:
        await c.close()


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        make_token("mallory", secret="another-secret-of-some-length"),
        make_token(None),  # no sub
        make_token("late", expires_in=-3600),
    ],
    ids=["garbage", "wrong-secret", "no-sub", "expired"],
)
async def test_bad_token_gets_auth_fail_and_the_socket_closes(url: str, token: str) -> None:
    c = await WsClient.connect(url)
    try:
        await c.send({"type": "AUTH", "token": token})
        fail = await c.expect("AUTH_FAIL")
        assert fail["error"] == "Authentication failed"
        await c.wait_closed()
    finally:
        await c.close()


async def test_frames_before_auth_are_dropped_and_the_socket_stays_open(url: str) -> None:
    c = await WsClient.connect(url)
    try:
        await c.expect("AUTH_REQUIRED")
        await c.send({"type": "PING", "timestamp": 1})
        await c.send({"type": "DEVICE_HELLO"})
        await c.send({"type": "CLIENT_OP", "payload": lww_put("pre-auth", "k", 1)})
        await c.send_bytes(b"\x81\xa1k" + b"\x91" * 2000 + b"\xc0")  # hostile depth
        await c.expect_none(lambda m: True, within=0.5)
        assert not c.closed.is_set()
        await c.authenticate(make_token("patient"))
        await c.ping()
    finally:
        await c.close()


async def test_a_second_auth_after_the_handshake_is_ignored(url: str) -> None:
    c = await authed(url)
    try:
        await c.send({"type": "AUTH", "token": make_token("user-0")})
        await c.ping()
        assert not [m for m in c.drain() if m["type"] in ("AUTH_ACK", "AUTH_FAIL")]
    finally:
        await c.close()


async def test_auth_with_device_token_gets_a_device_id_that_is_stable_across_connections(
    url: str,
) -> None:
    c = await WsClient.connect(url)
    try:
        await c.send({"type": "AUTH", "token": make_token("dev"), "deviceToken": "unknown"})
        first = await c.expect("AUTH_ACK")
        assert first["deviceId"] and first["deviceToken"]
    finally:
        await c.close()
    c = await WsClient.connect(url)
    try:
        await c.send(
            {"type": "AUTH", "token": make_token("dev"), "deviceToken": first["deviceToken"]}
        )
        again = await c.expect("AUTH_ACK")
        assert again["deviceId"] == first["deviceId"]
        assert "deviceToken" not in again
    finally:
        await c.close()


async def test_three_clients_authenticate_at_the_same_time(url: str) -> None:
    clients = await asyncio.gather(*(authed(url, f"u{i}") for i in range(3)))
    try:
        assert sorted(c.user_id or "" for c in clients) == ["u0", "u1", "u2"]
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def test_ping_gets_pong_echoing_the_timestamp_with_server_time(url: str) -> None:
    c = await authed(url)
    try:
        before = int(time.time() * 1000)
        pong = await c.ping()
        assert abs(pong["serverTime"] - before) < 5_000
    finally:
        await c.close()


async def test_a_client_that_reconnects_sees_what_it_wrote_before(url: str) -> None:
    c = await authed(url, "rc")
    await c.write(lww_put("reconnect", "k", {"v": 1}))
    await c.close()
    c = await authed(url, "rc")
    try:
        assert await c.query("reconnect") == [{"key": "k", "value": {"v": 1}}]
    finally:
        await c.close()


# --- writes --------------------------------------------------------------------------------------


async def test_client_op_is_acked_with_its_id_and_read_back_by_a_query(url: str) -> None:
    c = await authed(url)
    try:
        op = lww_put("crdt-lww", "k1", {"name": "Alice", "tags": ["a"], "n": 1.5})
        ack = await c.write(op)
        assert payload(ack) == {"lastId": op["id"], "achievedLevel": "APPLIED"}
        assert await c.query("crdt-lww") == [
            {"key": "k1", "value": {"name": "Alice", "tags": ["a"], "n": 1.5}}
        ]
    finally:
        await c.close()


async def test_op_batch_is_acked_once_with_the_last_op_id(url: str) -> None:
    c = await authed(url)
    try:
        ops = [lww_put("batch-ack", f"k{i}", i) for i in range(5)]
        await c.send({"type": "OP_BATCH", "payload": {"ops": ops}})
        ack = await c.expect("OP_ACK")
        assert payload(ack)["lastId"] == ops[-1]["id"]
        await c.expect_none("OP_ACK", within=0.3)
        assert len(await c.query("batch-ack")) == 5
    finally:
        await c.close()


async def test_sdk_shaped_ops_with_float_millis_and_extra_fields_are_applied(url: str) -> None:
    c = await authed(url)
    try:
        ts = {"millis": float(int(time.time() * 1000)), "counter": 0.0, "nodeId": "c0ffee"}
        op = {
            "id": next_op_id(),
            "mapName": "sdk-shape",
            "opType": "PUT",
            "key": "t1",
            "record": {"value": {"title": "Buy milk"}, "timestamp": ts},
            "timestamp": ts,
            "synced": False,
        }
        await c.write_batch([op])
        walk = await c.merkle_walk("sdk-shape")
        assert walk.records["t1"]["timestamp"]["millis"] == int(ts["millis"])
    finally:
        await c.close()


async def test_later_write_wins_between_two_clients(url: str) -> None:
    a, b = await authed(url, "a"), await authed(url, "b")
    try:
        now = int(time.time() * 1000)
        await a.write(lww_put("lww-race", "k", "from-b-is-newer", timestamp=hlc(now + 10, 0, "b")))
        await b.write(lww_put("lww-race", "k", "from-a-is-older", timestamp=hlc(now, 0, "a")))
        assert await a.query("lww-race") == [{"key": "k", "value": "from-b-is-newer"}]
    finally:
        await a.close()
        await b.close()


async def test_remove_hides_the_key_from_queries_and_keeps_a_tombstone_for_sync(url: str) -> None:
    c = await authed(url)
    try:
        now = int(time.time() * 1000)
        await c.write(lww_put("lww-remove", "gone", 1, timestamp=hlc(now)))
        await c.write(lww_put("lww-remove", "kept", 2, timestamp=hlc(now)))
        await c.write(lww_remove("lww-remove", "gone", timestamp=hlc(now + 1)))
        assert await c.query("lww-remove") == [{"key": "kept", "value": 2}]
        walk = await c.merkle_walk("lww-remove")
        assert walk.records["gone"]["value"] is None
        assert walk.records["gone"]["timestamp"]["millis"] == now + 1
    finally:
        await c.close()


async def test_remove_with_a_nil_record_is_stamped_by_the_server(url: str) -> None:
    c = await authed(url)
    try:
        await c.write(lww_put("nil-remove", "k", 1, timestamp=hlc(1_000)))
        op = {
            "id": next_op_id(),
            "mapName": "nil-remove",
            "key": "k",
            "opType": "REMOVE",
            "record": None,
        }
        await c.write(op)
        assert await c.query("nil-remove") == []
    finally:
        await c.close()


async def test_a_timestamp_far_in_the_future_is_clamped_to_the_server_clock(url: str) -> None:
    c = await authed(url)
    try:
        future = int(time.time() * 1000) + 3_600_000
        await c.write(lww_put("clamp", "k", 1, timestamp=hlc(future, 7, "skewed")))
        walk = await c.merkle_walk("clamp")
        ts = walk.records["k"]["timestamp"]
        assert ts["millis"] < future - 3_000_000
        assert (ts["counter"], ts["nodeId"]) == (7, "skewed")
    finally:
        await c.close()


async def test_invalid_ops_get_op_rejected_with_a_reason_and_the_batch_is_still_acked(
    url: str,
) -> None:
    c = await authed(url)
    try:
        good = lww_put("reject", "ok", 1)
        no_ts = {
            "id": next_op_id(),
            "mapName": "reject",
            "key": "bad",
            "opType": "PUT",
            "record": {"value": 1},
        }
        no_key = {
            "id": next_op_id(),
            "mapName": "reject",
            "opType": "PUT",
            "record": good["record"],
        }
        ack = await c.write_batch([no_ts, good, no_key])
        assert payload(ack)["lastId"] == no_key["id"]
        rejected = {payload(m)["opId"]: payload(m) for m in c.drain() if m["type"] == "OP_REJECTED"}
        assert set(rejected) == {no_ts["id"], no_key["id"]}
        assert "timestamp" in rejected[no_ts["id"]]["reason"]
        assert rejected[no_key["id"]]["code"] == 400
        assert await c.query("reject") == [{"key": "ok", "value": 1}]
    finally:
        await c.close()


async def test_write_concern_is_honoured_and_reported_in_the_ack(url: str) -> None:
    c = await authed(url)
    try:
        op = lww_put("concern", "k", 1)
        ack = await c.write_batch([op], writeConcern="PERSISTED", timeout=5000)
        assert payload(ack)["achievedLevel"] in ("APPLIED", "REPLICATED", "PERSISTED")
        await c.send(
            {
                "type": "OP_BATCH",
                "payload": {"ops": [lww_put("concern", "x", 1)], "writeConcern": "NOPE"},
            }
        )
        err = await c.expect("ERROR")
        assert payload(err)["code"] == 400 and "writeConcern" in payload(err)["message"]
    finally:
        await c.close()


async def test_a_wrong_map_type_op_is_rejected_by_the_owner(url: str) -> None:
    c = await authed(url)
    try:
        await c.write(lww_put("typed-map", "k", 1))
        op = or_add("typed-map", "k2", "x")
        await c.write(op)
        rej = await c.expect("OP_REJECTED", opId=op["id"])
        assert payload(rej)["code"] == 409
    finally:
        await c.close()


# --- map events ----------------------------------------------------------------------------------


async def test_server_event_reaches_other_map_subscribers_but_never_the_writer(url: str) -> None:
    writer, watcher, bystander = (
        await authed(url, "w"),
        await authed(url, "s"),
        await authed(url, "x"),
    )
    try:
        await writer.subscribe("events")
        await watcher.subscribe("events")
        await bystander.subscribe("other-map")
        now = int(time.time() * 1000)
        await writer.write(lww_put("events", "k", {"v": 1}, timestamp=hlc(now)))
        ev = payload(await watcher.expect("SERVER_EVENT"))
        assert ev["eventType"] == "PUT" and ev["key"] == "k"
        assert ev["record"] == {"value": {"v": 1}, "timestamp": hlc(now)}
        await writer.write(lww_remove("events", "k", timestamp=hlc(now + 5)))
        rm = payload(await watcher.expect("SERVER_EVENT", eventType="REMOVE"))
        assert rm["record"] == {"value": None, "timestamp": hlc(now + 5)}
        await writer.expect_none("SERVER_EVENT", within=0.3)
        await bystander.expect_none("SERVER_EVENT", within=0.05)
    finally:
        await asyncio.gather(writer.close(), watcher.close(), bystander.close())


async def test_or_add_and_or_remove_reach_another_client_as_events(url: str) -> None:
    a, b = await authed(url, "a"), await authed(url, "b")
    try:
        await b.subscribe("or-events")
        add = or_add("or-events", "post-1", "red")
        await a.write(add)
        ev = payload(await b.expect("SERVER_EVENT", eventType="OR_ADD"))
        assert ev["orRecord"]["value"] == "red"
        assert ev["orRecord"]["tag"] == ev["orTag"] == add["orRecord"]["tag"]
        await a.write(or_remove("or-events", "post-1", add["orRecord"]["tag"]))
        ev = payload(await b.expect("SERVER_EVENT", eventType="OR_REMOVE"))
        assert ev["orTag"] == add["orRecord"]["tag"]
    finally:
        await a.close()
        await b.close()


# --- small messages ------------------------------------------------------------------------------


async def test_partition_map_lists_this_edge_as_owner_of_all_271_partitions(
    url: str, system: ServiceProcess
) -> None:
    c = await authed(url)
    try:
        await c.send({"type": "PARTITION_MAP_REQUEST", "payload": {"currentVersion": 0}})
        pm = payload(await c.expect("PARTITION_MAP"))
        assert pm["partitionCount"] == 271 and pm["version"] >= 1
        assert len(pm["partitions"]) == 271
        (node,) = pm["nodes"]
        assert node["endpoints"]["websocket"] == f"ws://127.0.0.1:{system.port}"
        assert {p["ownerNodeId"] for p in pm["partitions"]} == {node["nodeId"]}
        await c.send(
            {"type": "PARTITION_MAP_REQUEST", "payload": {"currentVersion": pm["version"]}}
        )
        await c.expect_none("PARTITION_MAP", within=0.3)
    finally:
        await c.close()


async def test_sql_query_is_refused_promptly_as_a_disabled_feature(url: str) -> None:
    c = await authed(url)
    try:
        await c.send({"type": "SQL_QUERY", "payload": {"sql": "SELECT 1", "queryId": "s1"}})
        resp = payload(await c.expect("SQL_QUERY_RESP", 5))
        assert (
            resp["code"] == "FEATURE_DISABLED" and "sql is not available" in resp["error"].lower()
        )
        assert resp["queryId"] == "s1" and resp["rows"] == []
    finally:
        await c.close()


async def test_pn_counter_merges_across_clients_and_speaks_both_state_shapes(url: str) -> None:
    a, b = await authed(url, "a"), await authed(url, "b")
    try:
        await b.send({"type": "COUNTER_REQUEST", "payload": {"name": "likes"}})
        first = payload(await b.expect("COUNTER_RESPONSE"))
        assert first["state"]["positive"] == {} and first["state"]["p"] == {}
        state = {"positive": {"client-a": 5}, "negative": {"client-a": 1}}
        await a.send({"type": "COUNTER_SYNC", "payload": {"name": "likes", "state": state}})
        mine = payload(await a.expect("COUNTER_UPDATE"))["state"]
        assert mine["positive"] == {"client-a": 5} and mine["n"] == {"client-a": 1}
        theirs = payload(await b.expect("COUNTER_UPDATE"))["state"]
        assert theirs["positive"] == {"client-a": 5}
        await b.send(
            {
                "type": "COUNTER_SYNC",
                "payload": {"name": "likes", "state": {"p": {"client-b": 2}, "n": {}}},
            }
        )
        merged = payload(await b.expect("COUNTER_UPDATE"))["state"]
        assert merged["positive"] == {"client-a": 5, "client-b": 2}
    finally:
        await a.close()
        await b.close()


async def test_messages_without_a_reply_are_accepted_silently(url: str) -> None:
    c = await authed(url)
    try:
        await c.send({"type": "CLIENT_APPLY_ACK", "cursor": 3})
        await c.send({"type": "QUERY_SYNC_INIT", "payload": {"queryId": "q", "rootHash": 1}})
        await c.send({"type": "HYBRID_QUERY_SUBSCRIBE", "payload": {"subscriptionId": "h"}})
        await c.ping()
        assert [m["type"] for m in c.drain()] == []
    finally:
        await c.close()


# --- limits and abuse ----------------------------------------------------------------------------


async def test_a_malformed_frame_gets_an_error_and_the_socket_lives_on(url: str) -> None:
    c = await authed(url)
    try:
        for bad in (b"\xff\xff", msgpack.packb([1, 2]), msgpack.packb({"no": "type"})):
            await c.send_bytes(bad)
            err = payload(await c.expect("ERROR"))
            assert err["code"] == 400
        await c.send({"type": "OP_BATCH", "payload": {"ops": "not-a-list"}})
        assert payload(await c.expect("ERROR"))["code"] == 400
        await c.send({"type": "NO_SUCH_MESSAGE"})
        assert "NO_SUCH_MESSAGE" in payload(await c.expect("ERROR"))["message"]
        await c.ping()
    finally:
        await c.close()


async def test_an_oversized_frame_gets_error_413_and_the_socket_lives_on(url: str) -> None:
    c = await authed(url)
    try:
        big = lww_put("too-big", "k", "x" * (2 * 1024 * 1024 + 10))
        await c.send({"type": "CLIENT_OP", "payload": big})
        assert payload(await c.expect("ERROR"))["code"] == 413
        await c.ping()
    finally:
        await c.close()


async def test_batch_items_are_depth_checked_one_by_one(url: str) -> None:
    c = await authed(url)
    try:
        deep_value: object = 0
        for _ in range(500):
            deep_value = [deep_value]
        deep = encode({"type": "CLIENT_OP", "payload": lww_put("dos", "deep", deep_value)})
        hostile = b"\x81\xa1k" + b"\x91" * 2000 + b"\xc0"
        shallow = lww_put("dos", "shallow", 1)
        probe = lww_put("dos", "probe", 2)
        deep_id = msgpack.unpackb(deep)["payload"]["id"]
        await c.send_bytes(
            inbound_batch(
                [deep, hostile, b"garbage", encode({"type": "CLIENT_OP", "payload": shallow})]
            )
        )
        await c.write(probe)
        await c.expect("OP_ACK", lastId=shallow["id"])
        assert not [m for m in c.messages if payload(m).get("lastId") == deep_id]
    finally:
        await c.close()


async def test_batch_of_more_inner_items_than_the_burst_is_charged_and_answered_429(
    url: str,
) -> None:
    c = await authed(url)
    try:
        data = struct.pack(">I", 0) * 40_001
        frame = msgpack.packb({"type": "BATCH", "count": 1, "data": data}, use_bin_type=True)
        await c.send_bytes(frame)
        assert payload(await c.expect("ERROR"))["code"] == 413
        await c.send_bytes(frame)
        err = payload(await c.expect("ERROR"))
        assert err == {"code": 429, "message": "rate limit exceeded, slow down"}
        assert not c.closed.is_set()
    finally:
        await c.close()


async def test_a_small_batch_is_processed_without_rate_limiting(url: str) -> None:
    c = await authed(url)
    try:
        ops = [lww_put("small-batch", f"k{i}", i) for i in range(3)]
        await c.send_bytes(
            inbound_batch([encode({"type": "CLIENT_OP", "payload": op}) for op in ops])
        )
        for op in ops:
            await c.expect("OP_ACK", lastId=op["id"])
        assert not [m for m in c.drain() if m["type"] == "ERROR"]
    finally:
        await c.close()


async def test_op_rate_above_the_limit_is_refused_with_429_and_the_connection_stays(
    url: str,
) -> None:
    c = await authed(url)
    try:
        ops = [lww_put("rate", f"k{i}", i) for i in range(1_000)]
        frame = encode({"type": "OP_BATCH", "payload": {"ops": ops}})
        for _ in range(5):  # 5,000 ops at once: over this system's 4,000 burst
            await c.send_bytes(frame)
        err = await c.expect(lambda m: m["type"] == "ERROR" and payload(m)["code"] == 429, 20)
        assert payload(err)["message"] == "rate limit exceeded, slow down"
        acks = await c.expect_many("OP_ACK", 4, 30)
        assert len(acks) == 4
        await c.ping()
    finally:
        await c.close()


# --- HTTP ----------------------------------------------------------------------------------------


async def test_health_ready_and_metrics_endpoints(http: str) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{http}/health") as r:
            body = await r.json()
            assert r.status == 200 and body["state"] == "ready" and "connections" in body
        for path in ("/ready", "/health/ready", "/healthz", "/health/live"):
            async with s.get(http + path) as r:
                assert r.status == 200, path
        async with s.get(f"{http}/metrics") as r:
            assert r.status == 200 and "topgun_edge_connections" in await r.text()
        async with s.get(f"{http}/") as r:
            assert r.status == 200 and "TopGun" in await r.text()


async def test_http_sync_applies_ops_visible_over_websocket_and_answers_msgpack(
    http: str, url: str
) -> None:
    op = lww_put("http-sync", "h1", {"via": "http"})
    body = encode({"clientId": "c1", "clientHlc": hlc(), "operations": [op]})
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{http}/sync", data=body, headers={"Content-Type": "application/msgpack"}) as r,
    ):
        assert r.status == 200 and r.headers["Content-Type"] == "application/msgpack"
        resp = msgpack.unpackb(await r.read())
    assert resp["ack"]["lastId"] == op["id"] and resp["serverHlc"]["millis"] > 0
    c = await authed(url)
    try:
        assert await c.query("http-sync") == [{"key": "h1", "value": {"via": "http"}}]
    finally:
        await c.close()


async def test_http_sync_returns_deltas_and_query_pages(http: str, url: str) -> None:
    c = await authed(url)
    try:
        await c.write_batch(
            [lww_put("http-deltas", f"k{i}", {"i": i}, timestamp=hlc(10_000 + i)) for i in range(4)]
        )
    finally:
        await c.close()
    body = encode(
        {
            "clientId": "c1",
            "clientHlc": hlc(),
            "syncMaps": [
                {"mapName": "http-deltas", "lastSyncTimestamp": hlc(10_001, 0, "test-client")}
            ],
            "queries": [
                {"queryId": "q", "mapName": "http-deltas", "filter": None, "limit": 2, "offset": 1}
            ],
        }
    )
    async with aiohttp.ClientSession() as s, s.post(f"{http}/sync", data=body) as r:
        resp = msgpack.unpackb(await r.read())
    (delta,) = resp["deltas"]
    assert sorted(rec["key"] for rec in delta["records"]) == ["k2", "k3"]
    (q,) = resp["queryResults"]
    assert q["results"] == [{"i": 1}, {"i": 2}] and q["hasMore"] is True


@pytest.mark.parametrize(
    "body",
    [b"\xff\xff", b"\x81\xa1k" + b"\x91" * 2000 + b"\xc0", msgpack.packb([1])],
    ids=["undecodable", "too-deep", "not-a-map"],
)
async def test_http_sync_with_a_bad_body_gets_400_json(http: str, body: bytes) -> None:
    async with aiohttp.ClientSession() as s, s.post(f"{http}/sync", data=body) as r:
        assert r.status == 400
        assert json.loads(await r.text())["code"] == 400


async def test_http_sync_with_an_empty_body_is_an_empty_request(http: str) -> None:
    async with aiohttp.ClientSession() as s, s.post(f"{http}/sync", data=b"") as r:
        assert r.status == 200
        assert msgpack.unpackb(await r.read())["serverHlc"]["millis"] > 0


CLIENT_TYPES = [
    "AUTH",
    "PING",
    "CLIENT_OP",
    "OP_BATCH",
    "SYNC_INIT",
    "MERKLE_REQ_BUCKET",
    "ORMAP_SYNC_INIT",
    "ORMAP_MERKLE_REQ_BUCKET",
    "ORMAP_DIFF_REQUEST",
    "ORMAP_PUSH_DIFF",
    "QUERY_SUB",
    "QUERY_UNSUB",
    "TOPIC_SUB",
    "TOPIC_UNSUB",
    "TOPIC_PUB",
    "COUNTER_REQUEST",
    "COUNTER_SYNC",
    "PARTITION_MAP_REQUEST",
    "SQL_QUERY",
    "ENTRY_PROCESS",
    "ENTRY_PROCESS_BATCH",
    "DEVICE_HELLO",
    "BATCH",
    "SEARCH",
    "SEARCH_SUB",
    "SEARCH_UNSUB",
    "LOCK_REQUEST",
    "REGISTER_RESOLVER",
    "CLIENT_APPLY_ACK",
]
FIELDS = [
    "payload",
    "ops",
    "mapName",
    "key",
    "record",
    "timestamp",
    "value",
    "orRecord",
    "orTag",
    "path",
    "query",
    "queryId",
    "topic",
    "data",
    "name",
    "state",
    "keys",
    "entries",
    "token",
    "fields",
    "predicate",
    "sort",
    "limit",
    "where",
    "groupBy",
    "writeConcern",
    "id",
    "opType",
    "requestId",
]


def junk(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([0, -1, 2**40, 2**63 - 1, 1.5, float("nan"), float("inf")])
    if kind == 2:
        return rng.choice(["", "x", "a:b", "é😀", "0" * 300, "PUT", "REMOVE", "OR_ADD", "fff"])
    if kind == 3:
        return rng.choice([True, False])
    if kind == 4:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(12)))
    if kind == 5:
        return {
            "millis": rng.choice([1.0, -5, "x", None]),
            "counter": 0,
            "nodeId": rng.choice(["n", 3]),
        }
    if kind == 6:
        return [junk(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(FIELDS): junk(rng, depth + 1) for _ in range(rng.randrange(5))}


async def test_random_garbage_in_every_message_type_never_takes_the_edge_down(url: str) -> None:
    rng = random.Random(1234)
    c = await authed(url, "fuzzer")
    try:
        for i in range(400):
            msg: dict[object, object] = {"type": rng.choice(CLIENT_TYPES)}
            for _ in range(rng.randrange(4)):
                msg[rng.choice(FIELDS)] = junk(rng)
            if rng.random() < 0.3:
                msg["payload"] = {rng.choice(FIELDS): junk(rng) for _ in range(rng.randrange(6))}
            await c.send_bytes(msgpack.packb(msg, use_bin_type=True))
            if i % 100 == 99:
                await c.ping(timeout=10)
        await c.ping(timeout=10)
        assert not c.closed.is_set()
        internal = [m for m in c.drain() if m["type"] == "ERROR" and payload(m).get("code") == 500]
        assert internal == []
    finally:
        await c.close()
    other = await authed(url)
    try:
        await other.write(lww_put("after-fuzz", "k", 1))
    finally:
        await other.close()
