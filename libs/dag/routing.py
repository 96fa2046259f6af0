"""Which target instance a row goes to on a partitioned edge.

The hash of a value depends only on the value, not on the column kind that holds it: a number
hashes by its float64 bits whether it sits in a numeric, dictionary or object column, so equal
keys always meet in the same instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from libs.crdt.hashing import fnv1a_many
from libs.dag.batch import Batch, DictColumn, NumColumn
from libs.dag.values import MISSING, deep_key

U64 = npt.NDArray[np.uint64]
KEY_FIELD = "_key"

_MISSING_HASH = 0x9E3779B97F4A7C15
_NONE_HASH = 0x51ED27063F2BE5A1
_TRUE_HASH = 0x2545F4914F6CDD1D
_FALSE_HASH = 0x14057B7EF767814F
_MASK64 = (1 << 64) - 1


def value_hash(value: Any) -> int:
    """A 64-bit hash of one record value, equal for values TopGun calls equal."""
    t = type(value)
    if t is int or t is float or (isinstance(value, int | float) and not isinstance(value, bool)):
        try:
            bits = np.array([float(value) + 0.0], dtype=np.float64).view(np.uint64)[0]
        except OverflowError:
            return hash(deep_key(value)) & _MASK64
        return int(bits)
    if value is MISSING:
        return _MISSING_HASH
    if value is None:
        return _NONE_HASH
    if t is bool:
        return _TRUE_HASH if value else _FALSE_HASH
    return hash(deep_key(value)) & _MASK64


def column_hashes(batch: Batch, name: str) -> U64:
    if name == KEY_FIELD:
        return fnv1a_many(list(batch.keys)).astype(np.uint64)
    col = batch.column(name)
    if isinstance(col, NumColumn):
        h = (col.values + 0.0).view(np.uint64).copy()
        h[~col.valid] = _MISSING_HASH
        if col.nulls is not None:
            h[col.nulls] = _NONE_HASH
        return h
    if isinstance(col, DictColumn):
        table = np.fromiter((value_hash(v) for v in col.dictionary), np.uint64, len(col.dictionary))
        table = np.append(table, np.uint64(_MISSING_HASH))
        return table[col.codes]
    return np.fromiter((value_hash(v) for v in col.values), np.uint64, len(col))


def row_hashes(batch: Batch, key_fields: Sequence[str]) -> U64:
    """One mixed 64-bit hash per row over ``key_fields`` (the record key when empty)."""
    h = np.zeros(len(batch), dtype=np.uint64)
    for name in key_fields or (KEY_FIELD,):
        h = h * np.uint64(0x100000001B3) ^ column_hashes(batch, name)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    return h


def split_by_target(batch: Batch, key_fields: Sequence[str], targets: int) -> list[Batch | None]:
    """``batch`` cut into one sub-batch per target instance (None where no row goes)."""
    if targets == 1:
        return [batch]
    dest = (row_hashes(batch, key_fields) % np.uint64(targets)).astype(np.intp)
    order = np.argsort(dest, kind="stable")
    counts = np.bincount(dest, minlength=targets)
    out: list[Batch | None] = []
    start = 0
    for t in range(targets):
        c = int(counts[t])
        out.append(batch.take(order[start : start + c]) if c else None)
        start += c
    return out
