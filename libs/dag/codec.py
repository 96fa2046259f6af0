"""Batches as bytes, for the trip between a storage node and the coordinator (and to callers).

One MsgPack document per batch: the keys, then each column in its own layout — numeric columns
as raw little-endian float64 plus bit-packed masks, dictionary columns as int32 codes plus the
distinct values, object columns as a list (missing as an extension type). Decoding rebuilds the
numpy arrays straight from the buffers.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

from libs.dag.batch import Batch, Column, DictColumn, NumColumn, ObjColumn
from libs.dag.values import MISSING

_VERSION = 1
_MISSING_EXT = 1


def _default(obj: Any) -> Any:
    if obj is MISSING:
        return msgpack.ExtType(_MISSING_EXT, b"")
    raise TypeError(f"cannot encode {type(obj).__name__} in a batch")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _MISSING_EXT:
        return MISSING
    return msgpack.ExtType(code, data)


def _bits(mask: np.ndarray) -> bytes:
    return np.packbits(mask).tobytes()


def _unbits(data: bytes, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=n).astype(bool)


def _encode_column(c: Column) -> list[Any]:
    if isinstance(c, NumColumn):
        return [
            "n",
            np.ascontiguousarray(c.values, dtype="<f8").tobytes(),
            _bits(c.valid),
            c.integral,
            None if c.nulls is None else _bits(c.nulls),
        ]
    if isinstance(c, DictColumn):
        c = _compact(c)
        return ["d", np.ascontiguousarray(c.codes, dtype="<i4").tobytes(), list(c.dictionary)]
    return ["o", list(c.values)]


def _decode_column(d: list[Any], n: int) -> Column:
    tag = d[0]
    if tag == "n":
        nulls = None if d[4] is None else _unbits(d[4], n)
        return NumColumn(
            np.frombuffer(d[1], dtype="<f8").astype(np.float64), _unbits(d[2], n), bool(d[3]), nulls
        )
    if tag == "d":
        dictionary = np.empty(len(d[2]), dtype=object)
        dictionary[:] = d[2]
        return DictColumn(np.frombuffer(d[1], dtype="<i4").astype(np.int32), dictionary)
    values = np.empty(n, dtype=object)
    values[:] = d[1]
    return ObjColumn(values)


def _compact(c: DictColumn) -> DictColumn:
    """Only the dictionary entries the rows use (a slice of a big map-wide dictionary must not
    ship the whole dictionary)."""
    size = len(c.dictionary)
    if size == 0:
        return c
    present = c.codes[c.codes >= 0]
    used: np.ndarray
    if size > 2 * len(c.codes):
        used = np.unique(present)
    else:
        used = np.flatnonzero(np.bincount(present, minlength=size))
    if len(used) == size:
        return c
    remap = np.full(size + 1, -1, dtype=np.int32)
    remap[used] = np.arange(len(used), dtype=np.int32)
    return DictColumn(remap[c.codes], c.dictionary[used])


def encode_batch(batch: Batch) -> bytes:
    doc = [
        _VERSION,
        list(batch.keys),
        [[name, *_encode_column(col)] for name, col in batch.columns.items()],
    ]
    return msgpack.packb(doc, use_bin_type=True, default=_default)


def decode_batch(data: bytes) -> Batch:
    version, keys, cols = msgpack.unpackb(data, raw=False, ext_hook=_ext_hook, strict_map_key=False)
    if version != _VERSION:
        raise ValueError(f"batch format {version} is not supported (expected {_VERSION})")
    n = len(keys)
    key_arr = np.empty(n, dtype=object)
    key_arr[:] = keys
    return Batch(key_arr, {c[0]: _decode_column(c[1:], n) for c in cols})


def encode_batch_parts(batch: Batch, max_bytes: int = 8 << 20) -> list[bytes]:
    """``batch`` encoded as one or more documents of at most about ``max_bytes`` each (a batch
    of large values is cut in row ranges, so no gRPC message outgrows the channel's limit)."""
    data = encode_batch(batch)
    if len(data) <= max_bytes or len(batch) <= 1:
        return [data]
    half = len(batch) // 2
    return encode_batch_parts(batch.take(slice(0, half)), max_bytes) + encode_batch_parts(
        batch.take(slice(half, len(batch))), max_bytes
    )
