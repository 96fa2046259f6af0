"""The values a storage node keeps per key: LWW records, OR records and OR tombstones.

Plain slotted classes (not dataclasses) because the write path creates one per applied op and
they make up most of a node's memory. Treat them as immutable: a change replaces the object in
its partition dict, it never mutates it, so a reader holding a reference sees a stable record.
"""

from __future__ import annotations

from typing import Any

from libs.crdt.hlc import Timestamp


class LwwRecord:
    """A last-writer-wins record; an empty ``value`` is a tombstone (REMOVE)."""

    __slots__ = ("counter", "millis", "node_id", "seq", "ttl_ms", "value")

    def __init__(
        self, millis: int, counter: int, node_id: str, value: bytes, ttl_ms: int, seq: int
    ) -> None:
        self.millis = millis
        self.counter = counter
        self.node_id = node_id
        self.value = value  # msgpack bytes; b"" for a tombstone
        self.ttl_ms = ttl_ms  # 0 = none
        self.seq = seq  # partition-local change sequence of the change that wrote it

    @property
    def is_tombstone(self) -> bool:
        return not self.value

    @property
    def timestamp(self) -> Timestamp:
        return Timestamp(self.millis, self.counter, self.node_id)

    def __repr__(self) -> str:
        return f"LwwRecord({self.millis}:{self.counter}:{self.node_id}, {len(self.value)}B, seq={self.seq})"


class OrRecord:
    """One add of an OR-map key. ``part`` caches the record's text in the key's entry hash."""

    __slots__ = ("counter", "millis", "node_id", "part", "seq", "ttl_ms", "value")

    def __init__(
        self,
        millis: int,
        counter: int,
        node_id: str,
        value: bytes,
        ttl_ms: int,
        seq: int,
        part: str = "",
    ) -> None:
        self.millis = millis
        self.counter = counter
        self.node_id = node_id
        self.value = value
        self.ttl_ms = ttl_ms
        self.seq = seq
        self.part = part

    @property
    def timestamp(self) -> Timestamp:
        return Timestamp(self.millis, self.counter, self.node_id)


class OrTombstone:
    """A removed tag of an OR-map key, with the timestamp of the remove."""

    __slots__ = ("counter", "millis", "node_id", "seq")

    def __init__(self, millis: int, counter: int, node_id: str, seq: int) -> None:
        self.millis = millis
        self.counter = counter
        self.node_id = node_id
        self.seq = seq


class OrEntry:
    """All adds and removed tags of one OR-map key, and the key's current Merkle entry hash
    (0 when no add is live, which leaves the leaf sums unchanged since mix(0) == 0)."""

    __slots__ = ("entry_hash", "records", "tombstones")

    def __init__(self) -> None:
        self.records: dict[str, OrRecord] = {}
        self.tombstones: dict[str, OrTombstone] = {}
        self.entry_hash = 0


class OrHashView:
    """What ``libs.crdt.or_entry`` reads from a record to print its part of the entry hash."""

    __slots__ = ("tag", "timestamp", "ttl_ms", "value")

    ttl_null = False

    def __init__(self, tag: str, value: Any, rec: OrRecord) -> None:
        self.tag = tag
        self.value = value
        self.timestamp = Timestamp(rec.millis, rec.counter, rec.node_id)
        self.ttl_ms = rec.ttl_ms or None
