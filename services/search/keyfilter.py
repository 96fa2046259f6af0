"""Which keys may have a document in an index: a Bloom filter that lets an upsert of a key the
index has never held skip its delete.

Deleting a key's previous document costs more than adding the new one: the writer keeps every
delete term and, at the next commit, looks each one up in every segment. Most writes create keys
(an id per record), so an upsert asks the filter first and deletes only when the key may be
indexed. A Bloom filter has no false negatives, so a key it has never been told of certainly has
no document; a false positive only costs the delete that would have happened anyway.

The filter lives in RAM. An index opened with documents fills it from the key dictionary
(``MapIndex`` does, with ``Searcher.terms_with_prefix``); when more keys were added than it was
sized for, the owner refills a larger one at its next commit, when the committed index holds
every key again.
"""

from __future__ import annotations

from collections.abc import Iterable

BITS_PER_KEY = 24  # two probes: ~0.7% false positives at capacity
MIN_BITS = 1 << 20  # 128 KiB
_U64 = (1 << 64) - 1


class KeyFilter:
    __slots__ = ("_bits", "_mask", "capacity", "count")

    def __init__(self, capacity: int = 0) -> None:
        nbits = MIN_BITS
        while nbits < capacity * BITS_PER_KEY:
            nbits <<= 1
        self._bits = bytearray(nbits >> 3)
        self._mask = nbits - 1
        self.capacity = nbits // BITS_PER_KEY  # keys it holds at the intended false-positive rate
        self.count = 0  # keys added (an upper bound: a key added twice may count twice)

    @classmethod
    def of(cls, keys: Iterable[str], count: int) -> KeyFilter:
        """A filter holding ``keys`` (about ``count`` of them), with room to double."""
        f = cls(2 * count)
        add = f.add
        for k in keys:
            add(k)
        return f

    @property
    def full(self) -> bool:
        return self.count > self.capacity

    def add(self, key: str) -> bool:
        """Record ``key``; returns whether it may have been recorded before."""
        h = hash(key) & _U64
        mask = self._mask
        i = h & mask
        j = (h >> 32) & mask
        bits = self._bits
        a, ab = i >> 3, 1 << (i & 7)
        b, bb = j >> 3, 1 << (j & 7)
        if bits[a] & ab and bits[b] & bb:
            return True
        bits[a] |= ab
        bits[b] |= bb
        self.count += 1
        return False

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` may have been added (False: it certainly was not)."""
        h = hash(key) & _U64
        mask = self._mask
        i = h & mask
        j = (h >> 32) & mask
        bits = self._bits
        return bool(bits[i >> 3] & (1 << (i & 7)) and bits[j >> 3] & (1 << (j & 7)))
