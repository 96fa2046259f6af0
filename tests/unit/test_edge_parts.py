"""Pure pieces of the edge: the rate limiter, BATCH item counting, the partition map, counter state
shapes, and the frames built from stored records and changes."""

from __future__ import annotations

import struct

import msgpack
import pytest

from libs.storage_client import OR_ADD, OR_REMOVE, PUT, REMOVE, StoredRecord
from libs.wire import BadFrame
from services.edge.change_feed import FeedChange
from services.edge.counters import parse_state, state_payload
from services.edge.live_queries import rows_of, server_event
from services.edge.merkle_sync import check_path, or_entries
from services.edge.partition_map import PartitionMapView
from services.edge.rate_limit import TokenBucket
from services.edge.session import count_batch_items


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_allows_the_burst_then_refills_at_the_rate() -> None:
    clock = Clock()
    b = TokenBucket(rate=100, burst=200, clock=clock)
    assert b.try_take(150) and b.try_take(50)
    assert not b.try_take(1)
    clock.t = 0.5  # 50 tokens back
    assert b.try_take(50) and not b.try_take(1)


def test_a_charge_above_the_burst_is_clamped_so_it_drains_the_bucket_once() -> None:
    clock = Clock()
    b = TokenBucket(rate=20_000, burst=40_000, clock=clock)
    assert b.try_take(40_001)
    clock.t = 0.01
    assert not b.try_take(40_001)


def test_batch_items_are_counted_from_their_big_endian_length_prefixes() -> None:
    item = b"\x81\xa4type\xa4PING"
    data = struct.pack(">I", len(item)) + item + struct.pack(">I", 0) * 3
    assert count_batch_items(data) == 4
    assert count_batch_items(data + struct.pack(">I", 99) + b"short") == 4  # truncated tail
    assert count_batch_items(b"") == 0


def test_partition_map_deals_partitions_over_the_edges_and_is_silent_when_current() -> None:
    view = PartitionMapView("ws://127.0.0.1:9001", ["ws://127.0.0.1:9002"])
    msg = view.answer(0)
    assert msg is not None
    pm = msg["payload"]
    assert [n["endpoints"]["websocket"] for n in pm["nodes"]] == [
        "ws://127.0.0.1:9001",
        "ws://127.0.0.1:9002",
    ]
    assert pm["nodes"][0]["endpoints"]["http"] == "http://127.0.0.1:9001"
    owners = [p["ownerNodeId"] for p in pm["partitions"]]
    assert len(owners) == 271 and owners[0] != owners[1] and owners[0] == owners[2]
    assert view.answer(pm["version"]) is None


def test_counter_state_is_read_in_both_shapes_and_written_in_both() -> None:
    assert parse_state({"positive": {"a": 5}, "negative": {"a": 1}}) == ({"a": 5.0}, {"a": 1.0})
    assert parse_state({"p": {"b": 2}, "n": {}}) == ({"b": 2.0}, {})
    for bad in ("x", {"positive": {"a": -1}}, {"positive": {"a": "1"}}, {"p": [1]}):
        with pytest.raises(BadFrame):
            parse_state(bad)
    out = state_payload({"a": 5.0}, {"a": 0.5})
    assert out == {"p": {"a": 5}, "n": {"a": 0.5}, "positive": {"a": 5}, "negative": {"a": 0.5}}


@pytest.mark.parametrize("path", ["", "a", "0f", "abc"])
def test_merkle_paths_of_up_to_three_lowercase_hex_digits_are_accepted(path: str) -> None:
    assert check_path({"path": path}, "X") == path


@pytest.mark.parametrize("path", ["abcd", "G", "AB", 3, None])
def test_other_merkle_paths_are_a_bad_frame(path: object) -> None:
    with pytest.raises(BadFrame):
        check_path({"path": path}, "X")


def rec(key: str, kind: int, value: object = None, tag: str = "", ttl: int = 0) -> StoredRecord:
    raw = msgpack.packb(value) if kind in (PUT, OR_ADD) else b""
    return StoredRecord("m", key, kind, 100, 1, "n", raw, tag, ttl)


def test_or_entries_group_records_and_tombstones_per_key() -> None:
    rows = [
        rec("k", OR_ADD, "red", "t1"),
        rec("k", OR_REMOVE, tag="t0"),
        rec("j", OR_ADD, "x", "t2", ttl=9),
    ]
    ts = {"millis": 100, "counter": 1, "nodeId": "n"}
    assert or_entries(rows) == [
        {
            "key": "k",
            "records": [{"value": "red", "timestamp": ts, "tag": "t1"}],
            "tombstones": ["t0"],
        },
        {
            "key": "j",
            "records": [{"value": "x", "timestamp": ts, "tag": "t2", "ttlMs": 9}],
            "tombstones": [],
        },
    ]


def change(kind: int, tag: str = "", ttl: int = 0) -> FeedChange:
    return FeedChange("k", kind, 100, 1, "n", b"", tag, ttl, "e/1")


def test_server_events_have_the_protocol_shape_for_every_kind() -> None:
    ts = {"millis": 100, "counter": 1, "nodeId": "n"}
    put = server_event("m", change(PUT, ttl=5), {"v": 1})["payload"]
    assert put == {
        "mapName": "m",
        "eventType": "PUT",
        "key": "k",
        "record": {"value": {"v": 1}, "timestamp": ts, "ttlMs": 5},
    }
    rm = server_event("m", change(REMOVE), None)["payload"]
    assert rm["eventType"] == "REMOVE" and rm["record"] == {"value": None, "timestamp": ts}
    add = server_event("m", change(OR_ADD, "t"), "x")["payload"]
    assert add["orRecord"] == {"value": "x", "timestamp": ts, "tag": "t"} and add["orTag"] == "t"
    orm = server_event("m", change(OR_REMOVE, "t"), None)["payload"]
    assert orm == {"mapName": "m", "eventType": "OR_REMOVE", "key": "k", "orTag": "t"}


def test_snapshot_rows_skip_tombstones_but_remember_their_timestamps() -> None:
    snap = rows_of([rec("a", PUT, 1), rec("b", REMOVE)])
    assert snap.rows == [("a", 1)] and set(snap.stamps) == {"a", "b"} and not snap.or_map
    snap = rows_of([rec("k", OR_ADD, "x", "t1"), rec("k", OR_ADD, "y", "t2")])
    assert snap.rows == [("k", ["x", "y"])] and snap.or_map
