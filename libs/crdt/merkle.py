"""Merkle trees for map sync (``MerkleTree.ts``, ``ORMapMerkleTree.ts``; CRDT.md section 8).

A map's tree is a prefix trie of depth 3 over the 8-hex-digit FNV-1a of each key. A leaf maps
key -> item hash; every node's hash is ``combine`` (sum of ``mix``) of its children's hashes, so
the tree is fully determined by the 4,096 leaf hashes, and a leaf hash is the wrapping sum of the
mixed item hashes in it. That additive form is ``LeafSums``: partitions keep one array each per
map, and adding the arrays of all partitions gives the whole map's tree.

``MerkleTree`` reproduces the TypeScript trie node for node: emptied nodes stay (hash 0) and
``get_buckets`` lists children in JavaScript object order (digits numerically, then letters in
insertion order). ``OrMerkleTree`` is the same trie with one entry per OR-map key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from libs.crdt.hashing import U32Array, fnv1a, fnv1a_many, mix
from libs.crdt.hlc import Timestamp
from libs.crdt.leaf_sums import (
    DEPTH,
    LEAF_COUNT,
    LeafSums,
    leaf_path,
    leaf_slot,
    leaf_slots,
    parse_path,
)
from libs.crdt.or_entry import hash_or_entry, or_entry_string

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "DEPTH",
    "LEAF_COUNT",
    "LeafSums",
    "MerkleTree",
    "OrMerkleTree",
    "leaf_path",
    "leaf_slot",
    "leaf_slots",
    "lww_item_hash",
    "lww_item_hashes",
]


# --- item hashes ---------------------------------------------------------------------------------


def lww_item_hash(key: str, ts: Timestamp) -> int:
    """``hashString(key + ":" + millis + ":" + counter + ":" + nodeId)``; the value and the TTL
    are not hashed."""
    return fnv1a(f"{key}:{ts.millis}:{ts.counter}:{ts.node_id}")


def lww_item_hashes(
    keys: Sequence[str],
    millis: Sequence[int] | npt.NDArray[Any],
    counters: Sequence[int] | npt.NDArray[Any],
    node_ids: Sequence[str],
) -> U32Array:
    """``lww_item_hash`` of many records at once (columns of equal length), as uint32."""
    ms = millis.tolist() if isinstance(millis, np.ndarray) else millis
    cs = counters.tolist() if isinstance(counters, np.ndarray) else counters
    strings = [f"{k}:{m}:{c}:{n}" for k, m, c, n in zip(keys, ms, cs, node_ids, strict=True)]
    return fnv1a_many(strings)


# --- the trie ------------------------------------------------------------------------------------


class _Touch:
    """Pending marker: create the key's path (it was set and removed again before hashing)."""


_TOUCH = _Touch()


class _HashTrie:
    """The depth-3 trie of key -> entry hash shared by the LWW and OR trees.

    Entries given as text (``set_text``) are hashed lazily: changes queue up and are hashed
    together with numpy (``fnv1a_many``) the next time anything reads the tree, in the order
    they were made. Every reader sees the tree exactly as if each change had been applied at
    once; only the cost moves from per change to per batch.
    """

    __slots__ = ("_kids", "_leaves", "_pending", "_slot_of", "_sums")

    def __init__(self) -> None:
        self._sums = LeafSums()
        # leaf slot -> {key: entry hash}, in insertion order; a leaf that exists in the trie.
        self._leaves: dict[int, dict[str, int]] = {}
        # inner node path -> child digits in creation order (JavaScript object order for letters).
        self._kids: dict[str, list[str]] = {"": []}
        # key -> leaf slot, for keys currently in a leaf.
        self._slot_of: dict[str, int] = {}
        # key -> text to hash (set), None (remove) or _TOUCH, not yet applied; in change order.
        self._pending: dict[str, str | _Touch | None] = {}

    # --- changes ---

    def set_text(self, key: str, text: str) -> None:
        """Set ``key``'s entry to ``fnv1a(text)``, hashed with the next batch."""
        self._pending[key] = text

    def set_entry(self, key: str, entry_hash: int, key_hash: int | None = None) -> None:
        """Put ``key`` -> ``entry_hash`` into its leaf (creating the path), updating hashes."""
        if self._pending:
            self._flush()
        slot = self._slot_of.get(key)
        if slot is None:
            if key_hash is None:
                key_hash = fnv1a(key)
            slot = key_hash >> 20
            self._slot_of[key] = slot
            leaf = self._leaves.get(slot)
            if leaf is None:
                leaf = self._leaf_for(slot)
            leaf[key] = entry_hash
            self._sums.add_item(slot, entry_hash)
            return
        leaf = self._leaves[slot]
        old = leaf[key]
        if old != entry_hash:
            leaf[key] = entry_hash
            self._sums.add_delta(slot, mix(entry_hash) - mix(old))

    def remove(self, key: str) -> None:
        """Delete ``key``'s entry; the emptied nodes stay in the trie with hash 0."""
        pending = self._pending
        if key in pending and key not in self._slot_of and pending[key] is not None:
            pending[key] = _TOUCH  # set, then removed: the path exists, the entry does not
        elif key in self._slot_of or key in pending:
            pending[key] = None

    def set_entries(
        self, keys: Sequence[str], entry_hashes: npt.ArrayLike, key_hashes: npt.ArrayLike
    ) -> None:
        """``set_entry`` for many keys at once (later duplicates of a key win)."""
        if self._pending:
            self._flush()
        self._apply(list(keys), np.asarray(entry_hashes, dtype=np.uint32), key_hashes)

    def _apply(self, keys: list[str], eh: U32Array, key_hashes: npt.ArrayLike) -> None:
        slots = leaf_slots(key_hashes)
        slot_of = self._slot_of
        leaves = self._leaves
        old_slots: list[int] = []
        old_hashes: list[int] = []
        for key, s, h in zip(keys, slots.tolist(), eh.tolist(), strict=True):
            cur = slot_of.get(key)
            if cur is None:
                slot_of[key] = s
                leaf = leaves.get(s)
                if leaf is None:
                    leaf = self._leaf_for(s)
                leaf[key] = h
            else:
                leaf = leaves[cur]
                old_slots.append(cur)
                old_hashes.append(leaf[key])
                leaf[key] = h
        self._sums.add_items(slots, eh)
        if old_slots:
            self._sums.remove_items(old_slots, old_hashes)

    def _flush(self) -> None:
        """Apply the queued changes in order, hashing all texts and new keys at once."""
        pending = self._pending
        self._pending = {}
        texts_only = [v for v in pending.values() if isinstance(v, str)]
        if len(texts_only) == len(pending):  # the common case: only sets
            keys = list(pending)
            self._apply(keys, fnv1a_many(texts_only), fnv1a_many(keys))
            return
        slot_of = self._slot_of
        set_keys: list[str] = []
        texts: list[str] = []
        for key, v in pending.items():
            if isinstance(v, str):
                set_keys.append(key)
                texts.append(v)
        # Route new keys (set or touched) with one batch hash.
        new_keys = [k for k in pending if k not in slot_of and pending[k] is not None]
        new_slot = dict(zip(new_keys, leaf_slots(fnv1a_many(new_keys)).tolist(), strict=True))
        entry = dict(zip(set_keys, fnv1a_many(texts).tolist(), strict=True))
        leaves = self._leaves
        add_slots: list[int] = []
        add_hashes: list[int] = []
        sub_slots: list[int] = []
        sub_hashes: list[int] = []
        for key, v in pending.items():
            cur = slot_of.get(key)
            if v is None:
                if cur is not None:
                    del slot_of[key]
                    sub_slots.append(cur)
                    sub_hashes.append(leaves[cur].pop(key))
                continue
            if cur is None:
                cur = new_slot[key]
                leaf = leaves.get(cur)
                if leaf is None:
                    leaf = self._leaf_for(cur)
                if v is _TOUCH:
                    continue
                slot_of[key] = cur
            else:  # an existing key (a touch only ever names a key not in the tree)
                leaf = leaves[cur]
                sub_slots.append(cur)
                sub_hashes.append(leaf[key])
            h = entry[key]
            leaf[key] = h
            add_slots.append(cur)
            add_hashes.append(h)
        if add_slots:
            self._sums.add_items(add_slots, add_hashes)
        if sub_slots:
            self._sums.remove_items(sub_slots, sub_hashes)

    def _leaf_for(self, slot: int) -> dict[str, int]:
        leaf = self._leaves.get(slot)
        if leaf is None:
            path = leaf_path(slot)
            for level in range(DEPTH):
                parent = path[:level]
                kids = self._kids[parent]
                c = path[level]
                if c not in kids:
                    kids.append(c)
                    if level + 1 < DEPTH:
                        self._kids[path[: level + 1]] = []
            leaf = {}
            self._leaves[slot] = leaf
        return leaf

    def _ready(self) -> _HashTrie:
        if self._pending:
            self._flush()
        return self

    # --- reading ---

    @property
    def leaf_sums(self) -> LeafSums:
        """The additive form of this tree (a copy)."""
        return self._ready()._sums.copy()

    def __len__(self) -> int:
        return len(self._ready()._slot_of)

    def __contains__(self, key: object) -> bool:
        return key in self._ready()._slot_of

    def entry(self, key: str) -> int | None:
        slot = self._ready()._slot_of.get(key)
        return None if slot is None else self._leaves[slot][key]

    @property
    def root(self) -> int:
        return self._ready()._sums.root()

    def has_node(self, path: str) -> bool:
        digits = parse_path(path)
        if digits is None:
            return False
        self._ready()
        if len(digits) == DEPTH:
            return int(path, 16) in self._leaves
        return path in self._kids

    def node_hash(self, path: str) -> int | None:
        """The hash of the node at ``path``, or ``None`` if the trie has no such node."""
        if not self.has_node(path):
            return None
        return self._sums.node_hash(path)

    def get_buckets(self, path: str) -> dict[str, int]:
        """``getBuckets(path)``: child digit -> child hash of the inner node at ``path``, in
        JavaScript object order; ``{}`` for a leaf or a missing node. Emptied children are
        listed with hash 0, as in TopGun."""
        kids = self._ready()._kids.get(path)
        if not kids:
            return {}
        digits = [c for c in kids if c <= "9"]
        digits.sort()
        letters = [c for c in kids if c > "9"]
        return {c: self._sums.node_hash(path + c) for c in digits + letters}

    def keys_in_bucket(self, path: str) -> list[str]:
        """``getKeysInBucket(path)``: the keys of the leaf at ``path``."""
        if len(path) != DEPTH or parse_path(path) is None:
            return []
        leaf = self._ready()._leaves.get(int(path, 16))
        return list(leaf) if leaf else []

    def entry_hashes(self, path: str) -> dict[str, int]:
        """Key -> entry hash of the leaf at ``path`` (``getEntryHashes``)."""
        if len(path) != DEPTH or parse_path(path) is None:
            return {}
        return dict(self._ready()._leaves.get(int(path, 16), {}))

    def dump(self) -> dict[str, dict[str, Any]]:
        """Every node by path: ``{"hash", "children"}`` for inner nodes and ``{"hash",
        "entries"}`` for leaves (the form of ``merkle.json``'s node dumps)."""
        self._ready()
        out: dict[str, dict[str, Any]] = {}
        for path in self._kids:
            out[path] = {"hash": self._sums.node_hash(path), "children": self.get_buckets(path)}
        for slot, leaf in self._leaves.items():
            path = leaf_path(slot)
            out[path] = {"hash": self._sums.node_hash(path), "entries": dict(leaf)}
        return out

    def find_diff_keys(self, path: str, remote_entries: Mapping[str, int]) -> set[str]:
        """Keys of the leaf at ``path`` whose entry hash differs from ``remote_entries``, plus
        keys only one side has."""
        local = self.entry_hashes(path)
        diff = {k for k, h in local.items() if remote_entries.get(k) != h}
        diff.update(k for k in remote_entries if k not in local)
        return diff


class MerkleTree(_HashTrie):
    """The LWW map's tree: entry = ``lww_item_hash(key, record.timestamp)``."""

    __slots__ = ()

    def update(self, key: str, record: Any, key_hash: int | None = None) -> None:
        """Insert or refresh ``key`` for a record (anything with ``.timestamp``) or a
        ``Timestamp``."""
        ts = record if isinstance(record, Timestamp) else record.timestamp
        if key_hash is not None:
            self.set_entry(key, lww_item_hash(key, ts), key_hash)
        else:
            self._pending[key] = f"{key}:{ts[0]}:{ts[1]}:{ts[2]}"

    @classmethod
    def from_records(cls, records: Iterable[tuple[str, Any]]) -> MerkleTree:
        tree = cls()
        for key, record in records:
            tree.update(key, record)
        return tree


class OrMerkleTree(_HashTrie):
    """The OR map's tree: one entry per key, ``hash_or_entry(key, live records)``."""

    __slots__ = ()

    def update(self, key: str, records: Mapping[str, Any], key_hash: int | None = None) -> None:
        """Refresh ``key`` from its records (tag -> record); no records removes the key."""
        if not records:
            self.remove(key)
        elif key_hash is not None:
            self.set_entry(key, hash_or_entry(key, records), key_hash)
        else:
            self._pending[key] = or_entry_string(key, records)
