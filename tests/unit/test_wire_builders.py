"""Server-message builders keep each message's shape (flat or wrapped) and required fields."""

from __future__ import annotations

import struct

from libs.crdt.hlc import Timestamp
from libs.wire import (
    LwwRecord,
    NodeInfo,
    OpResult,
    OrEntry,
    OrRecord,
    SearchHit,
    auth_ack,
    auth_fail,
    auth_required,
    batch,
    counter_response,
    counter_update,
    decode,
    encode,
    error,
    op_ack,
    op_rejected,
    ormap_diff_response,
    ormap_sync_resp_leaf,
    ormap_sync_resp_root,
    partition_map,
    pong,
    query_resp,
    query_update,
    search_resp,
    search_update,
    server_event,
    sql_query_resp_disabled,
    stub_response,
    sync_resp_leaf,
    topic_message,
)

TS = Timestamp(1700000000000, 2, "server-1")
TS_WIRE = {"millis": 1700000000000, "counter": 2, "nodeId": "server-1"}


def test_flat_messages_keep_fields_next_to_type() -> None:
    assert auth_required() == {"type": "AUTH_REQUIRED"}
    assert auth_ack("user-0", device_id="dev-1") == {
        "type": "AUTH_ACK",
        "userId": "user-0",
        "deviceId": "dev-1",
    }
    assert auth_fail() == {"type": "AUTH_FAIL", "error": "Authentication failed"}
    assert pong(5, 7) == {"type": "PONG", "timestamp": 5, "serverTime": 7}


def test_op_ack_echoes_last_id_with_applied_level_and_optional_results() -> None:
    assert op_ack("12") == {
        "type": "OP_ACK",
        "payload": {"lastId": "12", "achievedLevel": "APPLIED"},
    }
    ack = op_ack("3", "PERSISTED", [OpResult("3", False, "MEMORY", "denied")])
    assert ack["payload"]["results"] == [
        {"opId": "3", "success": False, "achievedLevel": "MEMORY", "error": "denied"}
    ]
    assert op_rejected("4", "no", 403) == {
        "type": "OP_REJECTED",
        "payload": {"opId": "4", "reason": "no", "code": 403},
    }


def test_error_is_wrapped_with_code_and_message() -> None:
    assert error(429, "rate limit exceeded, slow down") == {
        "type": "ERROR",
        "payload": {"code": 429, "message": "rate limit exceeded, slow down"},
    }


def test_remove_event_includes_the_tombstone_record() -> None:
    ev = server_event("todos", "REMOVE", "t1", record=LwwRecord(None, TS))
    assert ev == {
        "type": "SERVER_EVENT",
        "payload": {
            "mapName": "todos",
            "eventType": "REMOVE",
            "key": "t1",
            "record": {"value": None, "timestamp": TS_WIRE},
        },
    }


def test_or_add_event_carries_record_and_tag() -> None:
    rec = OrRecord("red", TS, "1700000000000:2:server-1")
    ev = server_event("tags", "OR_ADD", "p", or_record=rec, or_tag=rec.tag)
    assert ev["payload"]["orRecord"] == {"value": "red", "timestamp": TS_WIRE, "tag": rec.tag}
    assert ev["payload"]["orTag"] == rec.tag


def test_records_omit_absent_ttl_and_keep_a_present_one() -> None:
    assert "ttlMs" not in LwwRecord(1, TS).to_wire()
    assert LwwRecord(1, TS, 500).to_wire()["ttlMs"] == 500
    assert "ttlMs" not in OrRecord(1, TS, "t").to_wire()


def test_sync_leaf_and_or_leaf_shapes() -> None:
    leaf = sync_resp_leaf("m", "374", [("key1", LwwRecord({"a": 1}, TS))])
    assert leaf["payload"]["records"] == [
        {"key": "key1", "record": {"value": {"a": 1}, "timestamp": TS_WIRE}}
    ]
    entry = OrEntry("post-1", (OrRecord("blue", TS, "t1"),), ("t0",))
    or_leaf = ormap_sync_resp_leaf("tags", "d0e", [entry])
    assert or_leaf["payload"]["entries"] == [
        {
            "key": "post-1",
            "records": [{"value": "blue", "timestamp": TS_WIRE, "tag": "t1"}],
            "tombstones": ["t0"],
        }
    ]
    root = ormap_sync_resp_root("tags", 5, TS)
    assert root["payload"] == {"mapName": "tags", "rootHash": 5, "timestamp": TS_WIRE}
    assert ormap_diff_response("tags", [])["payload"] == {"mapName": "tags", "entries": []}


def test_query_resp_always_has_results_and_never_a_merkle_root() -> None:
    empty = query_resp("q1", [])
    assert empty == {"type": "QUERY_RESP", "payload": {"queryId": "q1", "results": []}}
    full = query_resp(
        "q1", [("a", {"x": 1})], has_more=True, next_cursor="c", cursor_status="valid"
    )
    assert full["payload"]["results"] == [{"key": "a", "value": {"x": 1}}]
    assert "merkleRootHash" not in full["payload"]


def test_query_update_leave_carries_nil_value() -> None:
    assert query_update("q", "k", {"x": 1}, "LEAVE")["payload"]["value"] is None
    assert query_update("q", "k", {"x": 1}, "ENTER")["payload"] == {
        "queryId": "q",
        "key": "k",
        "value": {"x": 1},
        "changeType": "ENTER",
    }


def test_topic_message_has_data_publisher_and_timestamp() -> None:
    assert topic_message("chat", None, "user-0", 17) == {
        "type": "TOPIC_MESSAGE",
        "payload": {"topic": "chat", "data": None, "publisherId": "user-0", "timestamp": 17},
    }


def test_search_resp_counts_results_and_search_update_is_wrapped() -> None:
    resp = search_resp("s1", [SearchHit("d", None, 1.5, ["wireless"])])
    assert resp["payload"] == {
        "requestId": "s1",
        "results": [{"key": "d", "value": None, "score": 1.5, "matchedTerms": ["wireless"]}],
        "totalCount": 1,
    }
    upd = search_update("s1", "d", None, 0.8, ["w"], "ENTER")
    assert upd["payload"]["subscriptionId"] == "s1" and upd["payload"]["changeType"] == "ENTER"


def test_counter_state_is_sent_under_both_pairs_of_names() -> None:
    for msg in (
        counter_response("likes", {"a": 5}, {"a": 1}),
        counter_update("likes", {"a": 5}, {"a": 1}),
    ):
        state = msg["payload"]["state"]
        assert state == {"p": {"a": 5}, "n": {"a": 1}, "positive": {"a": 5}, "negative": {"a": 1}}
        assert state["p"] is not state["positive"]


def test_partition_map_lists_every_partition_with_its_owner() -> None:
    pm = partition_map(1, [NodeInfo("node-0", "ws://127.0.0.1:8080")], ["node-0"] * 271, None, 99)
    body = pm["payload"]
    assert body["partitionCount"] == 271 and len(body["partitions"]) == 271
    assert body["partitions"][270] == {
        "partitionId": 270,
        "ownerNodeId": "node-0",
        "backupNodeIds": [],
    }
    assert body["nodes"] == [
        {"nodeId": "node-0", "endpoints": {"websocket": "ws://127.0.0.1:8080"}, "status": "ACTIVE"}
    ]


def test_sql_is_reported_disabled() -> None:
    body = sql_query_resp_disabled("q9")["payload"]
    assert body["code"] == "FEATURE_DISABLED"
    assert "sql is not available" in body["error"].lower()
    assert (body["columns"], body["rows"]) == ([], [])


def test_stub_responses_are_flat_and_unsuccessful() -> None:
    single = stub_response("ENTRY_PROCESS", "r1")
    assert single is not None and single["success"] is False and single["requestId"] == "r1"
    many = stub_response("ENTRY_PROCESS_BATCH", "r2", ["a", "b"])
    assert many is not None and set(many["results"]) == {"a", "b"}
    listed = stub_response("LIST_RESOLVERS", "r3")
    assert listed == {"type": "LIST_RESOLVERS_RESPONSE", "requestId": "r3", "resolvers": []}
    assert stub_response("LOCK_REQUEST", "r4") is None


def test_outbound_batch_unpacks_the_way_the_client_does() -> None:
    frames = [encode(pong(1, 2)), encode(error(500, "x"))]
    msg = decode(encode(batch(frames)))
    data = msg["data"]
    (count,) = struct.unpack_from("<I", data, 0)
    pos, out = 4, []
    for _ in range(count):
        (n,) = struct.unpack_from("<I", data, pos)
        out.append(decode(data[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    assert msg["count"] == 2
    assert out == [pong(1, 2), error(500, "x")]
