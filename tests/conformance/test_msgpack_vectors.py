"""Replay tests/vectors/msgpack.json: our codec reads every frame the TypeScript client sent,
our parsers accept them, and encode_js writes exactly the client's bytes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import msgpack
import pytest

from libs.crdt.hlc import Timestamp
from libs.wire import (
    Auth,
    ClientOp,
    CounterRequest,
    CounterSync,
    MerkleReqBucket,
    OpBatch,
    OpKind,
    OrMapPushDiff,
    OrMapSyncInit,
    QuerySub,
    SyncInit,
    TopicPub,
    builders,
    decode,
    decode_value,
    encode,
    encode_js,
    parse_message,
)

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "msgpack.json").read_text())

# The value each `encodings` label describes, as Python holds it.
ENCODING_VALUES: dict[str, Any] = {
    "null": None,
    "true": True,
    "false": False,
    "0": 0,
    "1": 1,
    "31": 31,
    "127": 127,
    "128": 128,
    "255": 255,
    "256": 256,
    "65535": 65535,
    "65536": 65536,
    "4294967295 (2^32-1)": 2**32 - 1,
    "4294967296 (2^32)": 2**32,
    "1700000000000 (typical HLC millis)": 1700000000000,
    "9007199254740991 (2^53-1)": 2**53 - 1,
    "-1": -1,
    "-32": -32,
    "-33": -33,
    "-128": -128,
    "-129": -129,
    "-32768": -32768,
    "-32769": -32769,
    "-2147483648 (-2^31)": -(2**31),
    "-2147483649 (-2^31-1)": -(2**31) - 1,
    "1.5": 1.5,
    "0.1": 0.1,
    "-0 (negative zero)": -0.0,
    "1.0 written in JavaScript (same value as 1)": 1.0,
    "NaN": math.nan,
    "Infinity": math.inf,
    '"" (empty string)': "",
    '"a"': "a",
    "31-byte string": "x" * 31,
    "32-byte string": "x" * 32,
    "255-byte string": "x" * 255,
    "256-byte string": "x" * 256,
    '"\u00e9" (2 UTF-8 bytes)': "\u00e9",
    '"\U0001f600" (4 UTF-8 bytes)': "\U0001f600",
    '"\u65e5\u672c\u8a9e"': "\u65e5\u672c\u8a9e",
    '11 x "\u65e5" (11 UTF-16 units, 33 UTF-8 bytes)': "\u65e5" * 11,
    '16 x "\U0001f600" (32 UTF-16 units, 64 UTF-8 bytes)': "\U0001f600" * 16,
    "[] (empty array)": [],
    "[1,2,3]": [1, 2, 3],
    "array of 16 zeros": [0] * 16,
    "{} (empty object)": {},
    '{"a":1}': {"a": 1},
    "object with 16 keys k0..k15": {f"k{i}": i for i in range(16)},
    '{"b":1,"10":2,"2":3,"a":4} (JS key order)': {"b": 1, "10": 2, "2": 3, "a": 4},
    # Python has no undefined: the member is simply absent, as stripUndefined leaves it.
    '{"a":1,"u":undefined}': {"a": 1},
    "[1,undefined,3]": [1, None, 3],
    "Uint8Array [1,2,3]": bytes([1, 2, 3]),
    # A JS Map has no Python counterpart; serialize() flattens it to an empty object.
    'new Map([["a",1]])': {},
    '{"t":{"millis":1700000000000,"counter":0,"nodeId":"n"}}': {
        "t": {"millis": 1700000000000, "counter": 0, "nodeId": "n"}
    },
}


def _case_id(case: dict[str, Any]) -> str:
    return str(case.get("label") or case.get("type") or case.get("step"))


CLIENT_FRAMES = [
    pytest.param(m, id=f"{i}:{m['type']}")
    for i, step in enumerate(VECTORS["client_session"])
    for m in step["messages"]
]


def test_every_encoding_label_has_a_python_value() -> None:
    labels = {c["label"] for c in VECTORS["encodings"]}
    assert labels == set(ENCODING_VALUES)


@pytest.mark.parametrize("case", VECTORS["encodings"], ids=_case_id)
def test_encode_js_writes_the_clients_bytes(case: dict[str, Any]) -> None:
    assert encode_js(ENCODING_VALUES[case["label"]]).hex() == case["hex"]


@pytest.mark.parametrize("case", VECTORS["encodings"], ids=_case_id)
def test_client_encoded_values_decode_to_the_same_number_or_value(case: dict[str, Any]) -> None:
    got = decode_value(bytes.fromhex(case["hex"]))
    want = ENCODING_VALUES[case["label"]]
    if isinstance(want, bytes):
        want = {str(i): b for i, b in enumerate(want)}
    if isinstance(want, float) and math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == want


@pytest.mark.parametrize("frame", CLIENT_FRAMES)
def test_client_session_frame_decodes_to_its_json(frame: dict[str, Any]) -> None:
    assert decode(bytes.fromhex(frame["hex"])) == frame["json"]


@pytest.mark.parametrize("frame", CLIENT_FRAMES)
def test_encode_js_reproduces_client_session_frame(frame: dict[str, Any]) -> None:
    assert encode_js(frame["json"]).hex() == frame["hex"]


@pytest.mark.parametrize("frame", CLIENT_FRAMES)
def test_client_session_frame_parses_into_its_message_type(frame: dict[str, Any]) -> None:
    expected = {
        "AUTH": Auth,
        "OP_BATCH": OpBatch,
        "QUERY_SUB": QuerySub,
        "MERKLE_REQ_BUCKET": MerkleReqBucket,
        "SYNC_INIT": SyncInit,
        "ORMAP_SYNC_INIT": OrMapSyncInit,
        "ORMAP_PUSH_DIFF": OrMapPushDiff,
        "COUNTER_REQUEST": CounterRequest,
        "COUNTER_SYNC": CounterSync,
        "TOPIC_PUB": TopicPub,
    }
    parsed = parse_message(decode(bytes.fromhex(frame["hex"])))
    assert isinstance(parsed, expected[frame["type"]])


def _frames(kind: str) -> list[dict[str, Any]]:
    return [
        m["json"]
        for step in VECTORS["client_session"]
        for m in step["messages"]
        if m["type"] == kind
    ]


def test_op_batch_frames_parse_with_kinds_ids_and_integer_timestamps() -> None:
    for raw in _frames("OP_BATCH"):
        msg = decode(encode_js(raw))
        batch = parse_message(msg)
        assert isinstance(batch, OpBatch)
        wire_ops = raw["payload"]["ops"]
        assert [op.id for op in batch.ops] == [o["id"] for o in wire_ops]
        assert batch.last_id == wire_ops[-1]["id"]
        for op, wire in zip(batch.ops, wire_ops, strict=True):
            assert op.kind == OpKind(wire["opType"])
            assert (op.map_name, op.key) == (wire["mapName"], wire["key"])
            if op.kind is OpKind.PUT:
                assert op.record is not None
                ts = op.record.timestamp
                assert type(ts.millis) is int
                assert ts == Timestamp.from_wire(wire["record"]["timestamp"])
                assert op.record.value == wire["record"]["value"]
                assert op.record.ttl_ms == wire["record"].get("ttlMs")
            if op.kind is OpKind.OR_ADD:
                assert op.or_record is not None
                assert op.or_record.tag == wire["orRecord"]["tag"]
            if op.kind is OpKind.OR_REMOVE:
                assert op.or_tag == wire["orTag"]


def test_query_sub_frames_normalise_sort_and_keep_predicate() -> None:
    subs = [parse_message(decode(encode_js(raw))) for raw in _frames("QUERY_SUB")]
    assert all(isinstance(s, QuerySub) for s in subs)
    where_sub, tree_sub = subs
    assert isinstance(where_sub, QuerySub) and isinstance(tree_sub, QuerySub)
    assert where_sub.query.where == {"age": 30}
    assert tree_sub.query.sort == (("age", "desc"), ("name", "asc"))
    assert tree_sub.query.limit == 10
    assert tree_sub.query.predicate is not None
    assert tree_sub.query.predicate["op"] == "and"


def test_sync_init_frames_read_map_hashes_and_cursors() -> None:
    (lww,) = _frames("SYNC_INIT")
    assert parse_message(decode(encode_js(lww))) == SyncInit("users", 0)
    (orm,) = _frames("ORMAP_SYNC_INIT")
    assert parse_message(decode(encode_js(orm))) == OrMapSyncInit(
        "tags", 32073819, {"d": 2847556662}, 0, 0
    )


def test_counter_sync_frame_reads_positive_negative_state() -> None:
    (raw,) = _frames("COUNTER_SYNC")
    sync = parse_message(decode(encode_js(raw)))
    assert isinstance(sync, CounterSync)
    assert sync.state.positive == {"client-a": 5}
    assert sync.state.negative == {"client-a": 1}
    assert sync.state.value == 4


def test_ormap_push_diff_frame_carries_records_and_all_tombstones() -> None:
    (raw,) = _frames("ORMAP_PUSH_DIFF")
    diff = parse_message(decode(encode_js(raw)))
    assert isinstance(diff, OrMapPushDiff)
    (entry,) = diff.entries
    assert entry.key == "post-1"
    assert [r.tag for r in entry.records] == [
        r["tag"] for r in raw["payload"]["entries"][0]["records"]
    ]
    assert entry.records[0].ttl_ms == 5000
    assert entry.tombstones == ("1700000000200:0:client-a",)


def test_client_op_schema_example_decodes_and_parses() -> None:
    case = VECTORS["client_op_schema_example"]
    msg = decode(bytes.fromhex(case["hex"]))
    assert msg == case["json"]
    op = parse_message(msg)
    assert isinstance(op, ClientOp)
    assert (op.id, op.map_name, op.key, op.kind) == ("op-1", "users", "user-1", OpKind.PUT)
    assert op.record is not None
    assert op.record.ttl_ms == 60000
    assert op.record.timestamp == Timestamp(1700000000000, 1, "client-a")
    assert encode_js(case["json"]).hex() == case["hex"]


def _built(case: dict[str, Any]) -> dict[str, Any]:
    """The message our builders produce from the fields of a server_to_client case."""
    j = case["json"]
    p = j.get("payload", {})
    kind = case["type"]
    if kind == "AUTH_ACK":
        return builders.auth_ack(j["userId"], protocol_version=j["protocolVersion"])
    if kind == "OP_ACK":
        results = [
            builders.OpResult(r["opId"], r["success"], r["achievedLevel"]) for r in p["results"]
        ]
        return builders.op_ack(p["lastId"], p["achievedLevel"], results)
    if kind == "SYNC_RESP_ROOT":
        ts = Timestamp.from_wire(p["timestamp"])
        return builders.sync_resp_root(p["mapName"], p["rootHash"], ts)
    if kind == "SYNC_RESP_BUCKETS":
        return builders.sync_resp_buckets(p["mapName"], p["path"], p["buckets"])
    if kind == "SYNC_RESP_LEAF":
        return builders.sync_resp_leaf(
            p["mapName"], p["path"], [(r["key"], r["record"]) for r in p["records"]]
        )
    if kind == "ORMAP_SYNC_RESP_ROOT":
        ts = Timestamp.from_wire(p["timestamp"])
        return builders.ormap_sync_resp_root(p["mapName"], p["rootHash"], ts)
    if kind == "ORMAP_SYNC_RESP_LEAF":
        return builders.ormap_sync_resp_leaf(p["mapName"], p["path"], p["entries"])
    if kind == "SERVER_EVENT":
        return builders.server_event(
            p["mapName"],
            p["eventType"],
            p["key"],
            record=p.get("record"),
            or_record=p.get("orRecord"),
            or_tag=p.get("orTag"),
        )
    if kind == "QUERY_RESP":
        return builders.query_resp(
            p["queryId"], [(r["key"], r["value"]) for r in p["results"]], has_more=p["hasMore"]
        )
    if kind == "QUERY_UPDATE":
        return builders.query_update(p["queryId"], p["key"], p["value"], p["changeType"])
    if kind == "PONG":
        return builders.pong(j["timestamp"], j["serverTime"])
    raise AssertionError(f"no builder mapping for {kind}")


@pytest.mark.parametrize("case", VECTORS["server_to_client"], ids=_case_id)
def test_encode_js_writes_server_message_bytes(case: dict[str, Any]) -> None:
    assert encode_js(case["json"]).hex() == case["hex"]


@pytest.mark.parametrize("case", VECTORS["server_to_client"], ids=_case_id)
def test_encode_output_decodes_back_to_the_server_message(case: dict[str, Any]) -> None:
    assert msgpack.unpackb(encode(case["json"]), raw=False) == case["json"]


@pytest.mark.parametrize("case", VECTORS["server_to_client"], ids=_case_id)
def test_builder_produces_the_server_message_byte_for_byte(case: dict[str, Any]) -> None:
    built = _built(case)
    assert built == case["json"]
    assert encode_js(built).hex() == case["hex"]


def _client_view(value: Any) -> Any:
    """What the client's deserialize() would hand the application for a decoded value."""
    if isinstance(value, msgpack.ExtType) and value.code == 0:
        return {"$undefined": True}
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) > 2**53:
        return float(value)  # BigInt -> Number
    if isinstance(value, dict):
        return {str(k): _client_view(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_client_view(v) for v in value]
    return value


@pytest.mark.parametrize("case", VECTORS["decode"], ids=_case_id)
def test_bytes_from_other_encoders_decode_as_the_client_reads_them(case: dict[str, Any]) -> None:
    assert _client_view(decode_value(bytes.fromhex(case["hex"]))) == case["decoded"]
