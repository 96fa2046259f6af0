"""Python rows for the columnar messages a storage node sends: RecordBatch and ChangeBatch.

The messages stay columnar on the wire; these helpers turn a page into a list of small frozen
rows for callers that work record by record. Callers on a hot path can read the columns of the
message directly instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from topgun_rpc import common_pb2, storage_pb2

PUT = common_pb2.PUT
REMOVE = common_pb2.REMOVE
OR_ADD = common_pb2.OR_ADD
OR_REMOVE = common_pb2.OR_REMOVE


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One stored record: a live LWW record (PUT), an LWW tombstone (REMOVE), a live OR record
    (OR_ADD) or an OR tombstone (OR_REMOVE: the removed tag and the remove's timestamp)."""

    map_name: str
    key: str
    kind: int
    millis: int
    counter: int
    node_id: str
    value: bytes  # msgpack of the value; empty for tombstones
    tag: str = ""
    ttl_ms: int = 0
    partition: int = 0
    seq: int = 0

    @property
    def is_tombstone(self) -> bool:
        return self.kind in (REMOVE, OR_REMOVE)

    @property
    def timestamp(self) -> tuple[int, int, str]:
        return (self.millis, self.counter, self.node_id)


@dataclass(frozen=True, slots=True)
class Change:
    """One applied change from a storage node's change feed: the resulting record, its
    partition-local sequence number and the origin of the op that caused it."""

    record: StoredRecord
    seq: int
    origin: str

    @property
    def partition(self) -> int:
        return self.record.partition


@dataclass(frozen=True, slots=True)
class ChangePage:
    """One ChangeBatch as rows. ``caught_up`` marks the end of the catch-up from the store."""

    changes: list[Change]
    caught_up: bool
    node_id: str


def records_from_batch(batch: common_pb2.RecordBatch) -> list[StoredRecord]:
    """The rows of a RecordBatch, in order."""
    names = list(batch.map_names)
    n = len(batch.keys)
    seqs = list(batch.seqs) if len(batch.seqs) == n else [0] * n
    tags = list(batch.tags) if len(batch.tags) == n else [""] * n
    ttls = list(batch.ttl_ms) if len(batch.ttl_ms) == n else [0] * n
    parts = list(batch.partitions) if len(batch.partitions) == n else [0] * n
    return [
        StoredRecord(names[mi], k, kd, ms, c, nid, v, t, ttl, p, s)
        for mi, k, kd, ms, c, nid, v, t, ttl, p, s in zip(
            batch.map_index,
            batch.keys,
            batch.kinds,
            batch.millis,
            batch.counters,
            batch.node_ids,
            batch.values,
            tags,
            ttls,
            parts,
            seqs,
            strict=True,
        )
    ]


def records_from_ops(ops: common_pb2.OpBatch, seqs: list[int] | None = None) -> list[StoredRecord]:
    """The rows of an OpBatch (as carried by a ChangeBatch), with optional sequence numbers."""
    names = list(ops.map_names)
    n = len(ops.keys)

    def col(field: Iterable[Any], fill: Any) -> list[Any]:
        values = list(field)
        return values if len(values) == n else [fill] * n

    seq_col = seqs if seqs is not None and len(seqs) == n else [0] * n
    return [
        StoredRecord(names[mi], k, kd, ms, c, nid, v, t, ttl, p, s)
        for mi, k, kd, ms, c, nid, v, t, ttl, p, s in zip(
            ops.map_index,
            ops.keys,
            ops.kinds,
            ops.millis,
            ops.counters,
            ops.node_ids,
            col(ops.values, b""),
            col(ops.tags, ""),
            col(ops.ttl_ms, 0),
            col(ops.partitions, 0),
            seq_col,
            strict=True,
        )
    ]


def changes_from_batch(batch: storage_pb2.ChangeBatch) -> ChangePage:
    """The changes of a ChangeBatch as rows, in the order they were applied."""
    ops = batch.ops
    seqs = list(batch.seqs)
    records = records_from_ops(ops, seqs)
    n = len(records)
    origins = list(ops.origins) if len(ops.origins) == n else [""] * n
    changes = [Change(r, r.seq, o) for r, o in zip(records, origins, strict=True)]
    return ChangePage(changes, batch.caught_up, batch.node_id)
