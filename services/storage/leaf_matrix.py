"""Merkle leaf sums of one map, one 4,096-slot uint32 row per partition that has records.

Rows are allocated on a partition's first record, so a small map costs a few rows, not 271.
Updates are batched: ``add`` takes partitions, leaf slots and already mixed deltas of a whole
batch and applies them with one ``np.add.at`` (uint32 arithmetic wraps, as the sums must).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from libs.crdt.hashing import PARTITION_COUNT
from libs.crdt.merkle import LEAF_COUNT

U32 = npt.NDArray[np.uint32]


class LeafMatrix:
    __slots__ = ("_n", "_row_of", "_rows")

    def __init__(self) -> None:
        self._row_of = np.full(PARTITION_COUNT, -1, dtype=np.intp)
        self._rows: U32 = np.zeros((0, LEAF_COUNT), dtype=np.uint32)
        self._n = 0

    def _rows_for(self, partitions: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
        rows = self._row_of[partitions]
        if (rows < 0).any():
            for p in np.unique(partitions[rows < 0]).tolist():
                self._allocate(int(p))
            rows = self._row_of[partitions]
        return rows

    def _allocate(self, partition: int) -> None:
        if self._n == len(self._rows):
            cap = min(PARTITION_COUNT, max(4, 2 * len(self._rows)))
            grown = np.zeros((cap, LEAF_COUNT), dtype=np.uint32)
            grown[: self._n] = self._rows[: self._n]
            self._rows = grown
        self._row_of[partition] = self._n
        self._n += 1

    def add(
        self,
        partitions: npt.ArrayLike,
        slots: npt.ArrayLike,
        mixed_deltas: npt.ArrayLike,
    ) -> None:
        """Add ``mixed_deltas[i]`` to leaf ``slots[i]`` of partition ``partitions[i]``."""
        parts = np.asarray(partitions, dtype=np.intp)
        if len(parts) == 0:
            return
        rows = self._rows_for(parts)
        np.add.at(
            self._rows,
            (rows, np.asarray(slots, dtype=np.intp)),
            np.asarray(mixed_deltas, dtype=np.uint32),
        )

    def total(self, partitions: Iterable[int]) -> U32:
        """The leaf sums of the union of ``partitions``."""
        rows = self._row_of[np.fromiter(partitions, dtype=np.intp)]
        rows = rows[rows >= 0]
        if len(rows) == 0:
            return np.zeros(LEAF_COUNT, dtype=np.uint32)
        return self._rows[rows].sum(axis=0, dtype=np.uint32)

    def clear_partition(self, partition: int) -> None:
        row = int(self._row_of[partition])
        if row >= 0:
            self._rows[row] = 0
