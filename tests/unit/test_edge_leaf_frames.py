"""Leaf frames written from storage columns are exactly the MsgPack of the protocol's map."""

from __future__ import annotations

import msgpack
import pytest

from libs.crdt import fnv1a
from services.edge.leaf_frames import PUT, REMOVE, array_header, lww_leaf_frame
from services.edge.merkle_sync import lww_rows_by_path
from topgun_rpc.common_pb2 import RecordBatch

VALUES = [
    {"name": "Alice", "tags": ["a", "b"]},
    1.5,
    -3,
    2**40,
    "é😀",
    True,
    [None, {"x": b"\x00"}],
]


def expected(map_name: str, path: str, rows: list[tuple]) -> dict:
    records = []
    for key, kind, millis, counter, node, value, ttl in rows:
        record = {
            "value": msgpack.unpackb(value, raw=False) if kind == PUT else None,
            "timestamp": {"millis": millis, "counter": counter, "nodeId": node},
        }
        if ttl:
            record["ttlMs"] = ttl
        records.append({"key": key, "record": record})
    return {
        "type": "SYNC_RESP_LEAF",
        "payload": {"mapName": map_name, "path": path, "records": records},
    }


@pytest.mark.parametrize("count", [0, 1, 15, 16, 300])
def test_leaf_frame_decodes_to_the_protocol_map(count: int) -> None:
    rows = [
        (
            f"key-{i}-ü",
            REMOVE if i % 5 == 4 else PUT,
            1_700_000_000_000 + i,
            i % 7,
            "node-x",
            b"" if i % 5 == 4 else msgpack.packb(VALUES[i % len(VALUES)], use_bin_type=True),
            60_000 if i % 3 == 0 else 0,
        )
        for i in range(count)
    ]
    frame = lww_leaf_frame("users", "9f3", rows)
    assert msgpack.unpackb(frame, raw=False) == expected("users", "9f3", rows)


def test_array_headers_cover_every_size_class() -> None:
    for n in (0, 15, 16, 65535, 65536):
        packed = msgpack.packb([None] * n)
        assert packed.startswith(array_header(n))


def test_columns_are_grouped_by_the_leaf_path_of_each_key_and_or_rows_are_left_out() -> None:
    keys = [f"k{i}" for i in range(50)]
    page = RecordBatch(
        map_names=["m"],
        map_index=[0] * 50,
        keys=keys,
        kinds=[3 if i == 7 else PUT for i in range(50)],  # one OR row
        millis=[1] * 50,
        counters=[0] * 50,
        node_ids=["n"] * 50,
        values=[b"\x01"] * 50,
    )
    paths = sorted({f"{fnv1a(k):08x}"[:3] for k in keys})
    by_path = lww_rows_by_path([page], paths[:-1])
    assert set(by_path) == set(paths[:-1])
    got = {row[0] for rows in by_path.values() for row in rows}
    wanted = {k for i, k in enumerate(keys) if i != 7 and f"{fnv1a(k):08x}"[:3] != paths[-1]}
    assert got == wanted
