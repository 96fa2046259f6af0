"""The SDK's side of the wire: server frames parse into typed messages (the TopGun vectors'
server frames included), client builders match the frames TopGun's client sends, and every kind
of malformed frame becomes ``BadServerFrame``."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import msgpack
import pytest

from libs.client import _protocol as proto
from libs.client._queries import QuerySpec

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "msgpack.json").read_text())
SERVER_FRAMES = {f["type"]: f for f in VECTORS["server_to_client"]}
CLIENT_FRAMES = [m["json"] for step in VECTORS["client_session"] for m in step["messages"]]


def pack(msg: Any) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)


def one(frame: bytes) -> proto.ServerMessage:
    msgs = proto.parse_server_frame(frame)
    assert len(msgs) == 1
    return msgs[0]


@pytest.mark.parametrize("case", VECTORS["server_to_client"], ids=lambda c: c["type"])
def test_every_vector_server_frame_parses_to_a_typed_message(case: dict[str, Any]) -> None:
    msg = one(bytes.fromhex(case["hex"]))
    assert type(msg).__name__ != "dict"


def test_vector_sync_frames_carry_their_fields_with_integer_timestamps() -> None:
    root = one(bytes.fromhex(SERVER_FRAMES["SYNC_RESP_ROOT"]["hex"]))
    assert isinstance(root, proto.SyncRespRoot)
    assert root.root_hash == 3762496982
    assert root.timestamp == {"millis": 1700000000500, "counter": 0, "nodeId": "server-1"}
    assert type(root.timestamp["millis"]) is int  # float64 on the wire
    buckets = one(bytes.fromhex(SERVER_FRAMES["SYNC_RESP_BUCKETS"]["hex"]))
    assert isinstance(buckets, proto.SyncRespBuckets)
    assert buckets.buckets == {"1": 1509894045, "9": 546813943, "a": 3034668033}
    leaf = one(bytes.fromhex(SERVER_FRAMES["SYNC_RESP_LEAF"]["hex"]))
    assert isinstance(leaf, proto.SyncRespLeaf)
    assert [k for k, _ in leaf.records] == ["k0", "gone"]
    assert leaf.records[1][1]["value"] is None


def test_op_ack_with_results_and_numeric_last_id() -> None:
    ack = one(bytes.fromhex(SERVER_FRAMES["OP_ACK"]["hex"]))
    assert isinstance(ack, proto.OpAck)
    assert ack.last_id == "6" and ack.achieved_level == "MEMORY"
    assert ack.results[0].op_id == "6" and ack.results[0].success
    numeric = one(pack({"type": "OP_ACK", "payload": {"lastId": 12.0}}))
    assert isinstance(numeric, proto.OpAck) and numeric.last_id == "12"


def test_or_leaf_keeps_null_ttl_distinct_from_absent_ttl() -> None:
    rec = {"value": 1, "timestamp": {"millis": 1, "counter": 0, "nodeId": "n"}, "tag": "1:0:n"}
    leaf = one(
        pack(
            {
                "type": "ORMAP_SYNC_RESP_LEAF",
                "payload": {
                    "mapName": "m",
                    "path": "abc",
                    "entries": [
                        {"key": "a", "records": [rec, {**rec, "tag": "t2", "ttlMs": None}]}
                    ],
                },
            }
        )
    )
    assert isinstance(leaf, proto.OrSyncRespLeaf)
    r1, r2 = leaf.entries[0].records
    assert "ttlMs" not in r1 and r2["ttlMs"] is None
    assert leaf.entries[0].tombstones == ()


def test_counter_state_is_read_in_either_spelling() -> None:
    a = one(pack({"type": "COUNTER_UPDATE", "payload": {"name": "c", "state": {"p": {"x": 2}}}}))
    b = one(
        pack(
            {"type": "COUNTER_RESPONSE", "payload": {"name": "c", "state": {"positive": {"x": 2}}}}
        )
    )
    assert isinstance(a, proto.CounterState) and isinstance(b, proto.CounterState)
    assert a.positive == b.positive == {"x": 2}


def test_server_batch_event_becomes_one_message_per_event() -> None:
    ev = {"mapName": "m", "eventType": "OR_REMOVE", "key": "k", "orTag": "t"}
    msgs = proto.parse_server_frame(
        pack({"type": "SERVER_BATCH_EVENT", "payload": {"events": [ev, ev]}})
    )
    assert [type(m) for m in msgs] == [proto.ServerEvent, proto.ServerEvent]


def test_batch_envelope_is_unpacked_little_endian_with_a_leading_count() -> None:
    inner = [pack({"type": "PONG", "timestamp": 5}), pack({"type": "AUTH_REQUIRED"})]
    data = struct.pack("<I", 2) + b"".join(struct.pack("<I", len(f)) + f for f in inner)
    msgs = proto.parse_server_frame(pack({"type": "BATCH", "count": 2, "data": data}))
    assert msgs == [proto.Pong(5, None), proto.AuthRequired()]


def test_text_frames_are_read_as_json() -> None:
    assert proto.parse_server_frame('{"type": "AUTH_REQUIRED"}') == [proto.AuthRequired()]


def test_partition_map_routes_keys_to_owners() -> None:
    pm = one(
        pack(
            {
                "type": "PARTITION_MAP",
                "payload": {
                    "version": 3,
                    "partitionCount": 271,
                    "nodes": [{"nodeId": "a", "endpoints": {"websocket": "ws://h:1"}}],
                    "partitions": [
                        {"partitionId": i, "ownerNodeId": "a" if i % 2 else "b"} for i in range(271)
                    ],
                },
            }
        )
    )
    assert isinstance(pm, proto.PartitionMap)
    assert pm.partition_of("key1") == 268  # the TopGun vector
    assert pm.owner_of("key1") == "b"
    assert pm.endpoint_of("a") == "ws://h:1" and pm.endpoint_of("b") is None


BAD_FRAMES = {
    "not msgpack": b"\xc1",
    "empty": b"",
    "truncated": pack({"type": "PONG", "timestamp": 1})[:-2],
    "array": pack([1, 2]),
    "no type": pack({"payload": {}}),
    "unknown type": pack({"type": "WHAT"}),
    "payload not a map": pack({"type": "QUERY_RESP", "payload": [1]}),
    "bucket key not hex": pack(
        {"type": "SYNC_RESP_BUCKETS", "payload": {"mapName": "m", "path": "", "buckets": {"g": 1}}}
    ),
    "hash out of range": pack(
        {"type": "SYNC_RESP_ROOT", "payload": {"mapName": "m", "rootHash": -1}}
    ),
    "timestamp millis not a number": pack(
        {
            "type": "SERVER_EVENT",
            "payload": {
                "mapName": "m",
                "eventType": "PUT",
                "key": "k",
                "record": {"value": 1, "timestamp": {"millis": "1", "counter": 0, "nodeId": "n"}},
            },
        }
    ),
    "fractional counter": pack(
        {
            "type": "SERVER_EVENT",
            "payload": {
                "mapName": "m",
                "eventType": "PUT",
                "key": "k",
                "record": {"value": 1, "timestamp": {"millis": 1, "counter": 0.5, "nodeId": "n"}},
            },
        }
    ),
    "unknown event type": pack(
        {"type": "SERVER_EVENT", "payload": {"mapName": "m", "eventType": "X", "key": "k"}}
    ),
    "batch truncated": pack({"type": "BATCH", "count": 1, "data": struct.pack("<II", 1, 9)}),
    "batch data not bytes": pack({"type": "BATCH", "count": 1, "data": "x"}),
    "batch with a bad item": pack(
        {"type": "BATCH", "count": 1, "data": struct.pack("<II", 1, 1) + b"\xc1"}
    ),
    "too deep": b"\x91" * 600 + b"\xc0",
    "query update change type": pack(
        {"type": "QUERY_UPDATE", "payload": {"queryId": "q", "key": "k", "changeType": "MOVE"}}
    ),
}


@pytest.mark.parametrize("frame", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_malformed_server_frames_raise_bad_server_frame(frame: bytes) -> None:
    with pytest.raises(proto.BadServerFrame):
        proto.parse_server_frame(frame)


def test_ignored_types_parse_to_nothing() -> None:
    assert proto.parse_server_frame(pack({"type": "LOCK_GRANTED", "payload": {}})) == []


def _client_frame(kind: str, **match: Any) -> dict[str, Any]:
    for f in CLIENT_FRAMES:
        if f["type"] == kind and all(f.get(k) == v for k, v in match.items()):
            return f
    raise AssertionError(f"no {kind} in the vectors")


def test_builders_match_the_frames_topguns_client_sends() -> None:
    assert proto.sync_init("users", 0) == _client_frame("SYNC_INIT")
    assert proto.merkle_req_bucket("users", "") == _client_frame("MERKLE_REQ_BUCKET")
    ormap = _client_frame("ORMAP_SYNC_INIT")
    assert proto.ormap_sync_init("tags", ormap["rootHash"], ormap["bucketHashes"], 0) == ormap
    assert proto.topic_pub("chat", {"text": "hi"}) == _client_frame("TOPIC_PUB")
    assert proto.counter_request("likes") == _client_frame("COUNTER_REQUEST")
    assert proto.auth("test-token") == _client_frame("AUTH")


def test_query_sub_sends_sort_as_an_array_like_topguns_client() -> None:
    sent = _client_frame("QUERY_SUB")  # the where-only one comes first
    spec = QuerySpec.build("users", where={"age": 30})
    assert proto.query_sub(sent["payload"]["queryId"], "users", spec.to_wire()) == sent
    spec2 = QuerySpec.build(
        "users",
        predicate={
            "op": "and",
            "children": [
                {"op": "gt", "attribute": "age", "value": 18},
                {"op": "like", "attribute": "name", "value": "A%"},
            ],
        },
        sort="age:desc,name",
        limit=10,
    )
    wanted = [f for f in CLIENT_FRAMES if f["type"] == "QUERY_SUB"][1]
    assert spec2.to_wire() == wanted["payload"]["query"]


def test_query_sort_accepts_a_map_a_pair_list_and_a_string() -> None:
    a = QuerySpec.build("m", sort={"price": "desc", "name": "asc"})
    b = QuerySpec.build("m", sort=[("price", "desc"), ("name", "asc")])
    c = QuerySpec.build("m", sort="price:desc,name")
    assert a.to_wire() == b.to_wire() == c.to_wire()


def test_malformed_predicates_are_refused_when_the_query_is_built() -> None:
    with pytest.raises(ValueError):
        QuerySpec.build("m", predicate={"op": "regex", "attribute": "a", "value": "("})
    with pytest.raises(ValueError):
        QuerySpec.build("m", limit=-1)
