"""FNV-1a over UTF-16 code units, the MurmurHash3 finaliser, combining and partitioning.

These are TopGun's hash primitives (``packages/core/src/utils/hash.ts``). Every function has a
scalar form for single values and a numpy form for whole batches; the batch forms are what the
write path uses, since per-item Python work is the bottleneck there.

FNV-1a over the UTF-16 units of an ASCII string is FNV-1a over its bytes (every unit is below
0x80), which ``fnv_hash_fast`` computes in C; keys and item strings are almost always ASCII.
Other strings take the code-unit paths below.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from fnv_hash_fast import fnv1a_32 as _fnv1a_bytes

PARTITION_COUNT = 271
FNV_OFFSET = 0x811C9DC5
FNV_PRIME = 0x01000193
_MASK = 0xFFFFFFFF

U32Array = npt.NDArray[np.uint32]


def _utf16_units(s: str) -> memoryview:
    return memoryview(s.encode("utf-16-le", "surrogatepass")).cast("H")


def fnv1a(s: str) -> int:
    """32-bit FNV-1a of ``s`` over its UTF-16 code units (never UTF-8 bytes); unsigned."""
    if s.isascii():
        return int(_fnv1a_bytes(s.encode("ascii")))
    h = FNV_OFFSET
    for u in _utf16_units(s):
        h = ((h ^ u) * FNV_PRIME) & _MASK
    return h


def hash_hex(h: int) -> str:
    """The Merkle path form of a hash: 8 lowercase hex digits, zero-padded."""
    return f"{h:08x}"


def mix(h: int) -> int:
    """MurmurHash3 fmix32 in uint32 arithmetic; ``mix(0) == 0``."""
    h &= _MASK
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK
    h ^= h >> 16
    return h


def combine(hashes: Iterable[int]) -> int:
    """``combineHashes``: the sum of ``mix(h)`` mod 2^32. Order-independent; ``combine([]) == 0``."""
    total = 0
    for h in hashes:
        total += mix(h)
    return total & _MASK


def partition_of(key: str) -> int:
    """The partition a record key lives in: ``fnv1a(key) % 271`` (the map name is not hashed)."""
    return fnv1a(key) % PARTITION_COUNT


# --- batch forms -------------------------------------------------------------------------------


_CHUNK = 1 << 16


def _units_and_lengths(strings: Sequence[str]) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]]:
    """All UTF-16 code units of ``strings`` back to back, and each string's unit count."""
    n = len(strings)
    joined = "".join(strings)
    if joined.isascii():
        units: npt.NDArray[Any] = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
        lengths = np.fromiter(map(len, strings), dtype=np.int64, count=n)
        return units, lengths
    raw = joined.encode("utf-16-le", "surrogatepass")
    units = np.frombuffer(raw, dtype="<u2")
    if len(raw) == 2 * len(joined):  # no character outside the BMP: units == characters
        lengths = np.fromiter(map(len, strings), dtype=np.int64, count=n)
    else:
        lengths = np.fromiter(
            (len(s.encode("utf-16-le", "surrogatepass")) >> 1 for s in strings),
            dtype=np.int64,
            count=n,
        )
    return units, lengths


def _fnv_chunk(units: npt.NDArray[Any], lengths: npt.NDArray[np.int64]) -> U32Array:
    n = len(lengths)
    out = np.full(n, FNV_OFFSET, dtype=np.uint32)
    if n == 0 or units.size == 0:
        return out
    width = int(lengths.max())
    uniform = int(lengths.min()) == width
    if uniform:
        order = None
        sorted_lengths = lengths
    else:
        # Longest first, so that column j only touches a prefix of the rows.
        order = np.argsort(-lengths, kind="stable")
        sorted_lengths = lengths[order]
    # Transposed, zero-padded matrix: row j holds the j-th unit of every string, contiguous.
    matrix = np.zeros((width, n), dtype=units.dtype)
    if uniform:
        matrix[:] = units.reshape(n, width).T
    else:
        starts = np.zeros(n, dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        rows = np.repeat(np.arange(n, dtype=np.int64), lengths)
        cols = np.arange(units.size, dtype=np.int64) - np.repeat(starts, lengths)
        position = np.empty(n, dtype=np.int64)
        position[order] = np.arange(n, dtype=np.int64)
        matrix[cols, position[rows]] = units
    active = np.searchsorted(-sorted_lengths, -np.arange(width), side="left")
    h = out
    prime = np.uint32(FNV_PRIME)
    for j in range(width):
        k = n if uniform else int(active[j])
        hk = h[:k]
        hk ^= matrix[j, :k]
        hk *= prime
    if order is not None:
        result = np.empty(n, dtype=np.uint32)
        result[order] = h
        return result
    return h


_SCALAR_BELOW = 12


def fnv1a_many(strings: Sequence[str]) -> U32Array:
    """FNV-1a of every string, as a uint32 array; equal to ``[fnv1a(s) for s in strings]``.

    An all-ASCII batch is hashed string by string in C. Otherwise the strings' UTF-16 units are
    laid out as a padded column-major matrix and hashed one column at a time, so the Python-level
    loop runs over the longest string's length, not over the strings (in chunks, to bound
    memory).
    """
    n = len(strings)
    if "".join(strings).isascii():
        return np.fromiter(map(_fnv1a_bytes, map(str.encode, strings)), dtype=np.uint32, count=n)
    if n <= _SCALAR_BELOW:
        # A column pass costs a few numpy calls per character; for a handful of strings the
        # scalar loop is cheaper (small write batches hash one or two keys).
        return np.fromiter(map(fnv1a, strings), dtype=np.uint32, count=n)
    if n <= _CHUNK:
        units, lengths = _units_and_lengths(strings)
        return _fnv_chunk(units, lengths)
    out = np.empty(n, dtype=np.uint32)
    for s in range(0, n, _CHUNK):
        part = strings[s : s + _CHUNK]
        units, lengths = _units_and_lengths(part)
        out[s : s + len(part)] = _fnv_chunk(units, lengths)
    return out


def mix_many(hashes: npt.ArrayLike) -> U32Array:
    """``mix`` applied elementwise (uint32 arithmetic wraps in numpy)."""
    h = np.asarray(hashes, dtype=np.uint32).copy()
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def partitions_of(keys: Sequence[str]) -> npt.NDArray[np.uint16]:
    """Partition ids of many keys at once."""
    return (fnv1a_many(keys) % np.uint32(PARTITION_COUNT)).astype(np.uint16)
