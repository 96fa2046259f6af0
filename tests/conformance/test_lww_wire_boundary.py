"""Records and timestamps as decoded client frames carry them: float64 millis from msgpack are
accepted and become ints (so hashes match), malformed fields are refused with a message that
names the field."""

from __future__ import annotations

import re
from typing import Any

import pytest

from libs.crdt import (
    LwwRecord,
    OrRecord,
    PNCounter,
    Timestamp,
    lww_item_hash,
    normalize_number,
    normalize_value,
)

TS = {"millis": 1700000000000, "counter": 0, "nodeId": "node-1"}


def test_float_millis_from_msgpack_hash_like_integers() -> None:
    as_float = Timestamp.from_wire({"millis": 1700000000000.0, "counter": 3.0, "nodeId": "n"})
    assert as_float == Timestamp(1700000000000, 3, "n")
    assert type(as_float.millis) is int and type(as_float.counter) is int
    assert str(as_float) == "1700000000000:3:n"
    assert lww_item_hash("k", as_float) == lww_item_hash("k", Timestamp(1700000000000, 3, "n"))


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ({"counter": 0, "nodeId": "n"}, "timestamp.millis is missing"),
        ({"millis": 1, "nodeId": "n"}, "timestamp.counter is missing"),
        ({"millis": 1, "counter": 0}, "timestamp.nodeId is missing"),
        ({"millis": "1", "counter": 0, "nodeId": "n"}, "timestamp.millis must be a number"),
        ({"millis": 1.5, "counter": 0, "nodeId": "n"}, "timestamp.millis must be an integer"),
        ({"millis": float("nan"), "counter": 0, "nodeId": "n"}, "must be an integer"),
        ({"millis": 1, "counter": -1, "nodeId": "n"}, "timestamp.counter must not be negative"),
        ({"millis": True, "counter": 0, "nodeId": "n"}, "timestamp.millis must be a number"),
        ({"millis": 1, "counter": 0, "nodeId": 7}, "timestamp.nodeId must be a string"),
    ],
    ids=[
        "no-millis",
        "no-counter",
        "no-node",
        "str-millis",
        "fraction",
        "nan",
        "negative",
        "bool",
        "int-node",
    ],
)
def test_malformed_timestamp_is_refused_naming_the_field(
    wire: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Timestamp.from_wire(wire)


def test_lww_record_round_trips_and_ttl_null_means_none() -> None:
    rec = LwwRecord.from_wire({"value": {"a": 1}, "timestamp": TS, "ttlMs": 5000.0})
    assert rec.ttl_ms == 5000 and type(rec.ttl_ms) is int
    assert rec.to_wire() == {"value": {"a": 1}, "timestamp": TS, "ttlMs": 5000}
    tomb = LwwRecord.from_wire({"value": None, "timestamp": TS, "ttlMs": None})
    assert tomb.is_tombstone and tomb.ttl_ms is None
    assert tomb.to_wire() == {"value": None, "timestamp": TS}
    with pytest.raises(ValueError, match=r"record\.timestamp is missing"):
        LwwRecord.from_wire({"value": 1})
    with pytest.raises(ValueError, match=r"record\.ttlMs"):
        LwwRecord.from_wire({"value": 1, "timestamp": TS, "ttlMs": "soon"})


def test_or_record_keeps_an_explicit_null_ttl_apart_from_a_missing_one() -> None:
    base = {"value": "v", "timestamp": TS, "tag": "1700000000000:0:node-1"}
    assert not OrRecord.from_wire(base).ttl_null
    with_null = OrRecord.from_wire({**base, "ttlMs": None})
    assert with_null.ttl_null and with_null.to_wire() == {**base, "ttlMs": None}
    with pytest.raises(ValueError, match="tag must be a string"):
        OrRecord.from_wire({"value": "v", "timestamp": TS})


def test_normalize_turns_integral_floats_into_ints_below_2_53() -> None:
    assert normalize_number(1.0) == 1 and type(normalize_number(1.0)) is int
    assert type(normalize_number(2.0**53)) is float  # not exactly representable beyond
    assert normalize_number(1.5) == 1.5
    assert normalize_number(True) is True
    assert normalize_value({"a": [1.0, {"b": 2.0}], "c": "x"}) == {"a": [1, {"b": 2}], "c": "x"}
    assert type(normalize_value({"a": [1.0]})["a"][0]) is int


def test_counter_state_accepts_both_spellings_and_refuses_negative_amounts() -> None:
    c = PNCounter("me")
    assert c.merge({"positive": {"a": 2}, "negative": {}})
    assert c.merge({"p": {"b": 1.0}, "n": {"a": 1}})
    assert c.value == 2
    assert not c.merge({"p": {"a": 1}})  # lower amounts change nothing
    with pytest.raises(ValueError, match="non-negative"):
        c.merge({"p": {"a": -1}})
    with pytest.raises(ValueError, match="needs"):
        c.merge({"value": 3})
