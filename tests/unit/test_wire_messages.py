"""Client messages parse into typed values, and wrong shapes become BadFrames naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.crdt.hlc import Timestamp
from libs.wire import (
    MAX_BATCH_ITEMS,
    Auth,
    BadFrame,
    Batch,
    ClientOp,
    CounterSync,
    HttpSyncRequest,
    OpBatch,
    OpKind,
    PartitionMapRequest,
    Ping,
    ProtocolError,
    QuerySub,
    Search,
    SearchSub,
    StubRequest,
    TooLarge,
    TopicPub,
    UnknownMessageType,
    WriteConcern,
    decode,
    decode_value,
    encode,
    encode_js,
    pack_inbound_batch,
    parse_http_sync_request,
    parse_message,
)
from libs.wire.messages import PARSERS

TS = {"millis": 1700000000000.0, "counter": 0, "nodeId": "c0ffee"}


def op(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": "1", "mapName": "todos", "key": "t1"}
    base.update(fields)
    return base


def batch(*ops: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "OP_BATCH", "payload": {"ops": list(ops), **extra}}


def parse_op(raw: dict[str, Any]) -> ClientOp:
    parsed = parse_message({"type": "CLIENT_OP", "payload": raw})
    assert isinstance(parsed, ClientOp)
    return parsed


# --- op kind detection (PROTOCOL.md 4.1) -------------------------------------------------------


def test_put_carries_the_record_with_integer_timestamp() -> None:
    o = parse_op(op(opType="PUT", record={"value": {"a": 1}, "timestamp": TS, "ttlMs": 5000.0}))
    assert o.kind is OpKind.PUT
    assert o.record is not None
    assert o.record.timestamp == Timestamp(1700000000000, 0, "c0ffee")
    assert type(o.record.timestamp.millis) is int
    assert o.record.ttl_ms == 5000 and type(o.record.ttl_ms) is int
    assert o.record.value == {"a": 1}


def test_put_without_op_type_is_detected_from_record() -> None:
    assert parse_op(op(record={"value": 1, "timestamp": TS})).kind is OpKind.PUT


def test_remove_by_op_type_keeps_the_tombstone_record() -> None:
    o = parse_op(op(opType="REMOVE", record={"value": None, "timestamp": TS}))
    assert o.kind is OpKind.REMOVE
    assert o.record is not None and o.record.is_tombstone


def test_nil_record_means_remove_even_without_op_type() -> None:
    o = parse_op(op(record=None))
    assert (o.kind, o.record) == (OpKind.REMOVE, None)


def test_or_record_means_or_add_and_keeps_the_tag() -> None:
    rec = {"value": "red", "timestamp": TS, "tag": "1700000000000:0:c0ffee"}
    o = parse_op(op(opType="OR_ADD", orRecord=rec))
    assert o.kind is OpKind.OR_ADD
    assert o.or_record is not None and o.or_record.tag == "1700000000000:0:c0ffee"


def test_or_tag_without_or_record_means_or_remove() -> None:
    o = parse_op(op(orTag="1:0:n", orRecord=None))
    assert (o.kind, o.or_tag) == (OpKind.OR_REMOVE, "1:0:n")


def test_op_without_any_record_is_a_bad_frame_saying_what_is_needed() -> None:
    with pytest.raises(BadFrame, match=r"none of record \(PUT\), orRecord \(OR_ADD\)"):
        parse_op(op(opType="PUT"))


def test_unknown_op_fields_are_ignored() -> None:
    o = parse_op(op(record={"value": 1, "timestamp": TS}, timestamp=TS, synced=False, extra=[1]))
    assert o.kind is OpKind.PUT


def test_numeric_op_id_is_read_as_its_decimal_string() -> None:
    assert parse_op(op(id=12.0, record={"value": 1, "timestamp": TS})).id == "12"


# --- OP_BATCH ----------------------------------------------------------------------------------


def test_op_batch_reads_ops_write_concern_and_timeout() -> None:
    msg = batch(
        op(id="1", record={"value": 1, "timestamp": TS}),
        op(id="2", record=None, writeConcern="PERSISTED"),
        writeConcern="REPLICATED",
        timeout=5000.0,
    )
    parsed = parse_message(msg)
    assert isinstance(parsed, OpBatch)
    assert parsed.last_id == "2"
    assert parsed.write_concern is WriteConcern.REPLICATED
    assert parsed.timeout_ms == 5000
    assert parsed.ops[1].write_concern is WriteConcern.PERSISTED


def test_empty_op_batch_has_no_last_id() -> None:
    parsed = parse_message(batch())
    assert isinstance(parsed, OpBatch) and parsed.last_id is None


@pytest.mark.parametrize(
    ("bad_op", "needle"),
    [
        (op(mapName=5, record=None), "payload.ops[1].mapName must be a string, got number"),
        ({"id": "2", "key": "k", "record": None}, "payload.ops[1].mapName is missing"),
        (op(key=None, record=None), "payload.ops[1].key"),
        (op(record={"value": 1}), "payload.ops[1].record.timestamp is missing"),
        (op(record="x"), "payload.ops[1].record must be a record map"),
        (
            op(record={"value": 1, "timestamp": {**TS, "millis": "soon"}}),
            "payload.ops[1].record.timestamp: timestamp.millis must be a number",
        ),
        (
            op(record={"value": 1, "timestamp": {**TS, "counter": 0.5}}),
            "timestamp.counter must be an integer",
        ),
        (
            op(record={"value": 1, "timestamp": TS, "ttlMs": "1h"}),
            "payload.ops[1].record.ttlMs must be an integer, got string",
        ),
        (op(orRecord={"value": 1, "timestamp": TS}), "payload.ops[1].orRecord.tag is missing"),
        (op(record=None, writeConcern="SOON"), "writeConcern must be one of FIRE_AND_FORGET"),
        ("not-an-op", "payload.ops[1].op must be a map, got string"),
    ],
)
def test_wrong_field_types_in_an_op_batch_name_the_op_and_field(bad_op: Any, needle: str) -> None:
    good = op(id="1", record={"value": 1, "timestamp": TS})
    with pytest.raises(BadFrame) as err:
        parse_message(batch(good, bad_op))
    assert err.value.code == 400
    assert err.value.message.startswith("OP_BATCH: ")
    assert needle in err.value.message


def test_op_batch_without_payload_says_the_message_is_wrapped() -> None:
    with pytest.raises(BadFrame, match="wrapped message"):
        parse_message({"type": "OP_BATCH", "ops": []})


def test_op_batch_ops_must_be_an_array() -> None:
    with pytest.raises(BadFrame, match=r"payload\.ops must be an array, got map"):
        parse_message({"type": "OP_BATCH", "payload": {"ops": {}}})


# --- handshake, sync, queries ------------------------------------------------------------------


def test_auth_and_ping_are_flat() -> None:
    assert parse_message({"type": "AUTH", "token": "t", "deviceToken": "d"}) == Auth("t", None, "d")
    assert parse_message({"type": "PING", "timestamp": 1700000000000.0}) == Ping(1700000000000)
    with pytest.raises(BadFrame, match="token is missing"):
        parse_message({"type": "AUTH"})
    with pytest.raises(BadFrame, match="timestamp must be an integer"):
        parse_message({"type": "PING", "timestamp": "now"})


def test_query_sub_accepts_the_map_form_of_sort_and_the_fields_fallback() -> None:
    msg = {
        "type": "QUERY_SUB",
        "payload": {
            "queryId": "q1",
            "mapName": "products",
            "query": {
                "sort": {"price": "desc", "name": "asc"},
                "limit": 2.0,
                "cursor": "abc",
                "groupBy": ["cat"],
                "aggregations": [{"func": "sum", "field": "price"}, {"func": "count"}],
                "fields": ["name"],
            },
        },
    }
    sub = parse_message(msg)
    assert isinstance(sub, QuerySub)
    assert sub.query.sort == (("price", "desc"), ("name", "asc"))
    assert sub.query.limit == 2
    assert sub.query.cursor == "abc"
    assert sub.query.group_by == ("cat",)
    assert [(a.func, a.field) for a in sub.query.aggregations or ()] == [
        ("sum", "price"),
        ("count", None),
    ]
    assert sub.fields == ("name",)


def test_query_sub_with_empty_query_subscribes_to_everything() -> None:
    sub = parse_message(
        {"type": "QUERY_SUB", "payload": {"queryId": "q", "mapName": "m", "query": {}}}
    )
    assert isinstance(sub, QuerySub)
    assert (sub.query.where, sub.query.predicate, sub.query.sort, sub.query.limit) == (
        None,
        None,
        (),
        None,
    )


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        (
            {"sort": [{"field": "a", "direction": "up"}]},
            "payload.query.sort[0].direction must be 'asc' or 'desc'",
        ),
        ({"sort": "a"}, "payload.query.sort must be an array"),
        ({"limit": "ten"}, "payload.query.limit must be an integer, got string"),
        ({"where": [1]}, "payload.query.where must be a map"),
        ({"predicate": {"attribute": "a"}}, "payload.query.predicate.op must be a string, got nil"),
        (
            {"predicate": {"op": "and", "children": [{"op": "gt"}, {"op": 3}]}},
            "payload.query.predicate.children[1].op must be a string",
        ),
        (
            {"aggregations": [{"func": "median"}]},
            "payload.query.aggregations[0].func must be one of",
        ),
    ],
)
def test_bad_query_shapes_name_the_field(query: dict[str, Any], needle: str) -> None:
    msg = {"type": "QUERY_SUB", "payload": {"queryId": "q", "mapName": "m", "query": query}}
    with pytest.raises(BadFrame) as err:
        parse_message(msg)
    assert needle in err.value.message


def test_unknown_predicate_ops_are_accepted() -> None:
    query = {"predicate": {"op": "matchPhrase", "attribute": "t", "query": "a b"}}
    sub = parse_message(
        {"type": "QUERY_SUB", "payload": {"queryId": "q", "mapName": "m", "query": query}}
    )
    assert isinstance(sub, QuerySub) and sub.query.predicate is not None


def test_ormap_sync_init_rejects_hashes_outside_u32() -> None:
    with pytest.raises(BadFrame, match="rootHash must be an unsigned 32-bit hash"):
        parse_message({"type": "ORMAP_SYNC_INIT", "mapName": "m", "rootHash": -1})


# --- topics, search, counters, cluster, stubs ---------------------------------------------------


def test_topic_pub_keeps_any_data_including_nil() -> None:
    for data in ("s", 1, True, {"a": [1]}, [1, 2], None):
        parsed = parse_message(
            {"type": "TOPIC_PUB", "payload": {"topic": "chat:room-1", "data": data}}
        )
        assert parsed == TopicPub("chat:room-1", data)


@pytest.mark.parametrize("topic", ["", "has space", "x" * 257, "ümlaut"])
def test_invalid_topic_names_are_bad_frames(topic: str) -> None:
    with pytest.raises(BadFrame, match="not a valid topic name"):
        parse_message({"type": "TOPIC_SUB", "payload": {"topic": topic}})


def test_search_and_search_sub_read_options() -> None:
    options = {"limit": 5.0, "minScore": 0.1, "boost": {"title": 2}, "fields": ["title"]}
    s = parse_message(
        {
            "type": "SEARCH",
            "payload": {"requestId": "r", "mapName": "a", "query": "ml", "options": options},
        }
    )
    assert isinstance(s, Search)
    assert (s.options.limit, s.options.min_score, s.options.boost, s.options.fields) == (
        5,
        0.1,
        {"title": 2},
        ("title",),
    )
    sub = parse_message(
        {"type": "SEARCH_SUB", "payload": {"subscriptionId": "s1", "mapName": "a", "query": "ml"}}
    )
    assert isinstance(sub, SearchSub) and sub.options.limit is None
    with pytest.raises(BadFrame, match=r"payload.options.boost.title must be a number"):
        parse_message(
            {
                "type": "SEARCH",
                "payload": {
                    "requestId": "r",
                    "mapName": "a",
                    "query": "q",
                    "options": {"boost": {"title": "x"}},
                },
            }
        )


@pytest.mark.parametrize(
    "state",
    [{"p": {"a": 5.0}, "n": {"a": 1}}, {"positive": {"a": 5}, "negative": {"a": 1.0}}],
)
def test_counter_sync_reads_both_state_shapes(state: dict[str, Any]) -> None:
    parsed = parse_message({"type": "COUNTER_SYNC", "payload": {"name": "likes", "state": state}})
    assert isinstance(parsed, CounterSync)
    assert parsed.state.positive == {"a": 5} and parsed.state.negative == {"a": 1}
    assert parsed.state.value == 4


def test_partition_map_request_payload_is_optional() -> None:
    assert parse_message({"type": "PARTITION_MAP_REQUEST"}) == PartitionMapRequest(0)
    assert parse_message(
        {"type": "PARTITION_MAP_REQUEST", "payload": {"currentVersion": 3.0}}
    ) == PartitionMapRequest(3)


def test_entry_process_batch_is_a_stub_request_with_its_keys() -> None:
    parsed = parse_message(
        {
            "type": "ENTRY_PROCESS_BATCH",
            "requestId": "r1",
            "mapName": "m",
            "keys": ["a", "b"],
            "processor": {},
        }
    )
    assert parsed == StubRequest("ENTRY_PROCESS_BATCH", "r1", "m", ("a", "b"))


def test_unknown_message_type_is_reported_as_such() -> None:
    with pytest.raises(UnknownMessageType) as err:
        parse_message({"type": "HYBRID_QUERY_SUBSCRIBE", "payload": {}})
    assert err.value.message_type == "HYBRID_QUERY_SUBSCRIBE"
    assert isinstance(err.value, BadFrame)


# --- inbound BATCH and HTTP /sync -------------------------------------------------------------


def test_inbound_batch_message_yields_its_encoded_items() -> None:
    ping = encode({"type": "PING", "timestamp": 1})
    parsed = parse_message(
        decode(encode({"type": "BATCH", "count": 1, "data": pack_inbound_batch([ping, ping])}))
    )
    assert parsed == Batch((ping, ping))


def test_inbound_batch_with_too_many_items_is_too_large() -> None:
    data = pack_inbound_batch([b""] * (MAX_BATCH_ITEMS + 1))
    with pytest.raises(TooLarge):
        parse_message({"type": "BATCH", "count": 1, "data": data})


def test_inbound_batch_data_must_be_bin() -> None:
    with pytest.raises(BadFrame, match="data must be bin"):
        parse_message({"type": "BATCH", "count": 1, "data": "abc"})


def test_http_sync_request_reads_every_section() -> None:
    body = {
        "clientId": "c1",
        "clientHlc": TS,
        "operations": [op(id="9", record={"value": 1, "timestamp": TS})],
        "syncMaps": [{"mapName": "todos", "lastSyncTimestamp": TS}],
        "queries": [{"queryId": "q", "mapName": "todos", "filter": {"done": False}, "limit": 10}],
        "searches": [{"searchId": "s", "mapName": "todos", "query": "milk"}],
    }
    req = parse_http_sync_request(decode_value(encode_js(body)))
    assert req.client_id == "c1"
    assert req.client_hlc == Timestamp(1700000000000, 0, "c0ffee")
    assert [o.id for o in req.operations] == ["9"]
    assert req.sync_maps[0].map_name == "todos"
    assert req.queries[0].filter == {"done": False} and req.queries[0].limit == 10
    assert req.searches[0].query == "milk"


def test_empty_http_sync_body_is_an_empty_request() -> None:
    assert parse_http_sync_request(None) == HttpSyncRequest()


def test_http_sync_bad_operation_names_its_index() -> None:
    with pytest.raises(BadFrame, match=r"operations\[0\].mapName is missing"):
        parse_http_sync_request({"operations": [{"key": "k", "record": None}]})


# --- fuzz: any decoded shape gives a typed message or a ProtocolError -------------------------

_scalars = (
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=5)
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "mapName",
                    "key",
                    "record",
                    "value",
                    "timestamp",
                    "ops",
                    "payload",
                    "query",
                    "sort",
                    "millis",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(PARSERS)), _values, _values)
def test_any_shape_under_a_known_type_parses_or_raises_a_protocol_error(
    kind: str, payload: Any, extra: Any
) -> None:
    try:
        parse_message(
            {"type": kind, "payload": payload, "mapName": extra, "token": extra, "data": extra}
        )
    except ProtocolError:
        pass
