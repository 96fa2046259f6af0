"""The additive form of a map's Merkle tree: 4,096 leaf sums (CRDT.md 8.1, DESIGN.md "Merkle sync").

A depth-3 tree's node hashes all follow from its leaf hashes, and a leaf hash is the wrapping sum
of the mixed item hashes in it. So each partition keeps one ``LeafSums`` per map, and adding the
arrays of all partitions gives exactly the leaf level of the whole map's single trie, from which
``root``, ``node_hash`` and ``buckets`` rebuild the three upper levels.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from libs.crdt.hashing import U32Array, mix, mix_many

DEPTH = 3
LEAF_COUNT = 16**DEPTH  # 4096
_MASK = 0xFFFFFFFF
_HEX = "0123456789abcdef"

__all__ = ["DEPTH", "LEAF_COUNT", "LeafSums", "leaf_path", "leaf_slot", "leaf_slots"]


# --- routing -------------------------------------------------------------------------------------


def leaf_slot(key_hash: int) -> int:
    """The depth-3 leaf a key hash routes to, 0..4095: the first 3 hex digits of its path."""
    return key_hash >> 20


def leaf_slots(key_hashes: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """``leaf_slot`` of many key hashes."""
    return (np.asarray(key_hashes, dtype=np.uint32) >> np.uint32(20)).astype(np.intp)


def leaf_path(slot: int) -> str:
    """The 3-hex-digit path of a leaf slot."""
    return f"{slot:03x}"


def parse_path(path: str) -> list[int] | None:
    """The hex digits of a tree path of 0..3 digits, or ``None`` if it is not one."""
    if len(path) > DEPTH:
        return None
    digits = []
    for c in path:
        d = _HEX.find(c)
        if d < 0:
            return None
        digits.append(d)
    return digits


# --- LeafSums: the additive form -----------------------------------------------------------------


class _Levels:
    """Node hashes of every level, computed from the leaf sums."""

    __slots__ = ("l1", "l2", "leaf", "root")

    def __init__(self, leaf: U32Array) -> None:
        self.leaf = leaf
        self.l2: U32Array = mix_many(leaf).reshape(256, 16).sum(axis=1, dtype=np.uint32)
        self.l1: U32Array = mix_many(self.l2).reshape(16, 16).sum(axis=1, dtype=np.uint32)
        self.root = int(mix_many(self.l1).sum(dtype=np.uint32))

    def node_hash(self, digits: list[int]) -> int:
        if not digits:
            return self.root
        if len(digits) == 1:
            return int(self.l1[digits[0]])
        if len(digits) == 2:
            return int(self.l2[digits[0] * 16 + digits[1]])
        return int(self.leaf[(digits[0] * 16 + digits[1]) * 16 + digits[2]])

    def children(self, digits: list[int]) -> U32Array | None:
        if not digits:
            return self.l1
        if len(digits) == 1:
            base = digits[0] * 16
            return self.l2[base : base + 16]
        if len(digits) == 2:
            base = (digits[0] * 16 + digits[1]) * 16
            return self.leaf[base : base + 16]
        return None


class LeafSums:
    """4,096 uint32 leaf hashes: slot ``s`` holds the wrapping sum of ``mix(item hash)`` of every
    item whose key hash routes to leaf ``s``. Arrays of several partitions add up to the array of
    their union; the upper three levels follow from it (``root``, ``node_hash``, ``buckets``)."""

    __slots__ = ("_levels", "sums")

    def __init__(self, sums: npt.ArrayLike | None = None) -> None:
        if sums is None:
            self.sums: U32Array = np.zeros(LEAF_COUNT, dtype=np.uint32)
        else:
            arr = np.array(sums, dtype=np.uint32)
            if arr.shape != (LEAF_COUNT,):
                raise ValueError(f"leaf sums must have {LEAF_COUNT} slots, got {arr.shape}")
            self.sums = arr
        self._levels: _Levels | None = None

    # mutation

    def add_items(self, slots: npt.ArrayLike, item_hashes: npt.ArrayLike) -> None:
        """Add items (their leaf slots and raw item hashes)."""
        np.add.at(self.sums, np.asarray(slots, dtype=np.intp), mix_many(item_hashes))
        self._levels = None

    def remove_items(self, slots: npt.ArrayLike, item_hashes: npt.ArrayLike) -> None:
        """Take items out again (exactly the hashes that were added)."""
        np.subtract.at(self.sums, np.asarray(slots, dtype=np.intp), mix_many(item_hashes))
        self._levels = None

    def replace_items(
        self, slots: npt.ArrayLike, old_hashes: npt.ArrayLike, new_hashes: npt.ArrayLike
    ) -> None:
        """Swap item hashes in place: ``mix(new) - mix(old)`` per slot (an updated record)."""
        delta = mix_many(new_hashes) - mix_many(old_hashes)
        np.add.at(self.sums, np.asarray(slots, dtype=np.intp), delta)
        self._levels = None

    def add_item(self, slot: int, item_hash: int) -> None:
        self.sums[slot] = (int(self.sums[slot]) + mix(item_hash)) & _MASK
        self._levels = None

    def remove_item(self, slot: int, item_hash: int) -> None:
        self.sums[slot] = (int(self.sums[slot]) - mix(item_hash)) & _MASK
        self._levels = None

    def add_delta(self, slot: int, delta: int) -> None:
        """Add an already mixed difference to one slot."""
        self.sums[slot] = (int(self.sums[slot]) + delta) & _MASK
        self._levels = None

    def clear(self) -> None:
        self.sums[:] = 0
        self._levels = None

    def copy(self) -> LeafSums:
        return LeafSums(self.sums)

    def __add__(self, other: LeafSums) -> LeafSums:
        if not isinstance(other, LeafSums):
            return NotImplemented
        return LeafSums(self.sums + other.sums)

    def __radd__(self, other: object) -> LeafSums:
        # sum([a, b, c]) starts from 0.
        if isinstance(other, int) and other == 0:
            return self.copy()
        return NotImplemented

    def __iadd__(self, other: LeafSums) -> LeafSums:
        if not isinstance(other, LeafSums):
            return NotImplemented
        self.sums += other.sums
        self._levels = None
        return self

    def __sub__(self, other: LeafSums) -> LeafSums:
        if not isinstance(other, LeafSums):
            return NotImplemented
        return LeafSums(self.sums - other.sums)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LeafSums):
            return NotImplemented
        return bool(np.array_equal(self.sums, other.sums))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LeafSums(root={self.root():#010x}, non_zero={int(np.count_nonzero(self.sums))})"

    # queries

    def _lv(self) -> _Levels:
        if self._levels is None:
            self._levels = _Levels(self.sums)
        return self._levels

    def root(self) -> int:
        return self._lv().root

    def node_hash(self, path: str) -> int:
        """The hash of the node at ``path`` (0..3 hex digits); 0 for an invalid path."""
        digits = parse_path(path)
        if digits is None:
            return 0
        return self._lv().node_hash(digits)

    def buckets(self, path: str) -> dict[str, int]:
        """The non-zero children of the node at ``path``, keyed by hex digit in JavaScript order
        (digits, then letters); ``{}`` for a leaf path or an invalid one."""
        digits = parse_path(path)
        if digits is None:
            return {}
        children = self._lv().children(digits)
        if children is None:
            return {}
        return {_HEX[i]: int(h) for i, h in enumerate(children.tolist()) if h}

    def levels(self) -> tuple[int, U32Array, U32Array, U32Array]:
        """``(root, level1[16], level2[256], leaves[4096])`` node hashes (read-only views)."""
        lv = self._lv()
        return lv.root, lv.l1, lv.l2, lv.leaf

    def to_bytes(self) -> bytes:
        """4,096 little-endian uint32 (the ``LeafSumsResponse.sums`` wire form)."""
        return self.sums.astype("<u4", copy=False).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> LeafSums:
        if len(data) != LEAF_COUNT * 4:
            raise ValueError(f"leaf sums must be {LEAF_COUNT * 4} bytes, got {len(data)}")
        return cls(np.frombuffer(data, dtype="<u4"))

    @classmethod
    def from_items(cls, key_hashes: npt.ArrayLike, item_hashes: npt.ArrayLike) -> LeafSums:
        """Leaf sums of items given by key hash and item hash."""
        ls = cls()
        ls.add_items(leaf_slots(key_hashes), item_hashes)
        return ls
