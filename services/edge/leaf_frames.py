"""SYNC_RESP_LEAF frames written straight from storage columns.

A cold Merkle pull sends every record of a map, so this is the edge's per-record hot path: the
record values arrive as the MsgPack bytes the edge stored, and they are spliced into the frame as
they are instead of being decoded and encoded again. The frame is plain MsgPack, the same a
``msgpack.packb`` of the equivalent map gives (``tests/unit/test_edge_leaf_frames.py``).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import msgpack

PUT = 1
REMOVE = 2

_pack = msgpack.Packer(use_bin_type=True).pack
_NIL = b"\xc0"

# {"type": "SYNC_RESP_LEAF", "payload": {"mapName": ..., "path": ..., "records": [...]}}
_HEAD = (
    b"\x82"
    + _pack("type")
    + _pack("SYNC_RESP_LEAF")
    + _pack("payload")
    + b"\x83"
    + _pack("mapName")
)
_PATH = _pack("path")
_RECORDS = _pack("records")
_KEY = b"\x82" + _pack("key")
_RECORD2 = _pack("record") + b"\x82" + _pack("value")
_RECORD3 = _pack("record") + b"\x83" + _pack("value")
_TIMESTAMP = _pack("timestamp") + b"\x83" + _pack("millis")
_COUNTER = _pack("counter")
_NODE_ID = _pack("nodeId")
_TTL = _pack("ttlMs")

LeafRow = tuple[
    str, int, int, int, str, bytes, int
]  # key, kind, millis, counter, nodeId, value, ttl


def array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


def lww_leaf_frame(map_name: str, path: str, rows: Sequence[LeafRow]) -> bytes:
    """The SYNC_RESP_LEAF of one leaf: ``rows`` are its LWW records (PUT with the stored value
    bytes, REMOVE as a tombstone with ``value: nil``); ``ttlMs`` appears only when set."""
    parts = [_HEAD, _pack(map_name), _PATH, _pack(path), _RECORDS, array_header(len(rows))]
    add = parts.append
    pack = _pack
    for key, kind, millis, counter, node_id, value, ttl in rows:
        add(_KEY)
        add(pack(key))
        add(_RECORD3 if ttl else _RECORD2)
        add(value if kind == PUT and value else _NIL)
        add(_TIMESTAMP)
        add(pack(millis))
        add(_COUNTER)
        add(pack(counter))
        add(_NODE_ID)
        add(pack(node_id))
        if ttl:
            add(_TTL)
            add(pack(ttl))
    return b"".join(parts)
