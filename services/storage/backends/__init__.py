"""Durable stores behind one small async interface.

A backend persists the *resulting* state of applied changes: LWW records, OR adds and OR
tombstones with their timestamps and seqs, map kinds and PN counter states. ``write`` makes one
batch durable in one transaction (the group commit); ``load`` streams everything back in chunks
at start-up, and the node rebuilds its state (records, leaf sums, seqs) from them.

- ``memory``: keeps nothing (tests); ``STORAGE_BACKEND=null`` selects it.
- ``sqlite``: one file per node, WAL, synchronous=FULL. A write appends the batch's changes as
  one log row; compaction folds the log into one snapshot row per (map, partition). Load =
  snapshots, then the log replayed through the CRDT merge.
- ``postgres``: asyncpg; schema per node created on first start; one row per record, COPY into
  staging tables and one upsert per table per write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from services.storage.changes import ChangeSet


@dataclass(frozen=True, slots=True)
class WriteBatch:
    """What the writer drained since its last commit, in the order it was applied."""

    maps: Sequence[tuple[str, int]] = ()  # (name, MapKind) of maps created
    changes: Sequence[ChangeSet] = ()
    counters: Sequence[tuple[str, bytes]] = ()  # (name, msgpack state) of counters changed

    def __len__(self) -> int:
        return sum(len(c) for c in self.changes) + len(self.maps) + len(self.counters)


@dataclass(frozen=True, slots=True)
class MapsChunk:
    rows: list[tuple[str, int]]  # (name, kind)


@dataclass(frozen=True, slots=True)
class LwwChunk:
    map_name: str
    # columns: key, partition, millis, counter, node_id, value, ttl_ms, seq
    keys: list[str]
    partitions: list[int]
    millis: list[int]
    counters: list[int]
    node_ids: list[str]
    values: list[bytes]
    ttl_ms: list[int]
    seqs: list[int]


@dataclass(frozen=True, slots=True)
class OrChunk:
    map_name: str
    # (key, partition, tag, value, millis, counter, node_id, ttl_ms, seq)
    records: list[tuple[str, int, str, bytes, int, int, str, int, int]] = field(
        default_factory=list
    )
    # (key, partition, tag, millis, counter, node_id, seq)
    tombstones: list[tuple[str, int, str, int, int, str, int]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CountersChunk:
    rows: list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    """Every row of one (map, partition) as a serialized RecordBatch (tombstones included)."""

    map_name: str
    kind: int
    partition: int
    data: bytes


@dataclass(frozen=True, slots=True)
class LogChunk:
    """Changes committed after the snapshots, as a serialized ChangeBatch (ops + seqs), to be
    merged again in order."""

    data: bytes


LoadChunk = MapsChunk | LwwChunk | OrChunk | CountersChunk | SnapshotChunk | LogChunk


@runtime_checkable
class Compacting(Protocol):
    """A backend that logs changes and needs the node's partition snapshots now and then."""

    def compaction_due(self) -> bool:
        """True once enough changes were logged since the last compaction."""
        ...

    def begin_compaction(self) -> tuple[int, set[tuple[str, int]]]:
        """``(last committed log id, (map, partition) pairs changed since the last one)``."""
        ...

    def abort_compaction(self, dirty: set[tuple[str, int]]) -> None:
        """A compaction failed: its pairs are still to be snapshotted."""
        ...

    async def compact(
        self, snapshots: Sequence[tuple[str, int, int, int, bytes]], upto: int
    ) -> None:
        """Store ``(map, partition, kind, row count, RecordBatch bytes)`` snapshots and drop the
        log up to id ``upto``, in one transaction."""


class Backend(Protocol):
    """A node's durable store."""

    name: str

    async def open(self) -> None:
        """Connect and create the schema if it is not there yet."""

    def load(self) -> AsyncIterator[LoadChunk]:
        """Everything stored, in chunks: maps first, then records, then counters."""
        ...

    async def write(self, batch: WriteBatch) -> None:
        """Make ``batch`` durable in one transaction; returns once it is committed."""

    async def close(self) -> None: ...


def lww_rows(cs: ChangeSet) -> list[tuple[str, str, int, int, int, str, bytes, int, int]]:
    """``(map, key, partition, millis, counter, node_id, value, ttl_ms, seq)`` of the LWW
    changes of a ChangeSet."""
    names = cs.map_names
    if len(names) == 1 and max(cs.kinds, default=0) <= 2:
        name = names[0]
        return [
            (name, k, p, m, c, n, v, t, s)
            for k, p, m, c, n, v, t, s in zip(
                cs.keys,
                cs.partitions,
                cs.millis,
                cs.counters,
                cs.node_ids,
                cs.values,
                cs.ttl_ms,
                cs.seqs,
                strict=True,
            )
        ]
    return [
        (names[mi], k, p, m, c, n, v, t, s)
        for mi, kd, k, p, m, c, n, v, t, s in zip(
            cs.map_index,
            cs.kinds,
            cs.keys,
            cs.partitions,
            cs.millis,
            cs.counters,
            cs.node_ids,
            cs.values,
            cs.ttl_ms,
            cs.seqs,
            strict=True,
        )
        if kd <= 2
    ]


def or_rows(
    cs: ChangeSet,
) -> tuple[
    list[tuple[str, str, str, int, bytes, int, int, str, int, int]],
    list[tuple[str, str, str, int, int, int, str, int]],
]:
    """OR adds ``(map, key, tag, partition, value, millis, counter, node_id, ttl_ms, seq)`` and
    OR tombstones ``(map, key, tag, partition, millis, counter, node_id, seq)`` of a ChangeSet,
    in change order."""
    adds = []
    tombs = []
    names = cs.map_names
    for i, kd in enumerate(cs.kinds):
        if kd == 3:
            adds.append(
                (
                    names[cs.map_index[i]],
                    cs.keys[i],
                    cs.tags[i],
                    cs.partitions[i],
                    cs.values[i],
                    cs.millis[i],
                    cs.counters[i],
                    cs.node_ids[i],
                    cs.ttl_ms[i],
                    cs.seqs[i],
                )
            )
        elif kd == 4:
            tombs.append(
                (
                    names[cs.map_index[i]],
                    cs.keys[i],
                    cs.tags[i],
                    cs.partitions[i],
                    cs.millis[i],
                    cs.counters[i],
                    cs.node_ids[i],
                    cs.seqs[i],
                )
            )
    return adds, tombs


def has_or(cs: ChangeSet) -> bool:
    return max(cs.kinds, default=0) >= 3


def open_backend(
    storage: str, *, sqlite_path: str, pg_schema: str, compact_after: int = 200_000
) -> Backend:
    """The backend a ``--storage`` value names: ``memory``/``null``, ``sqlite``, or a
    ``postgresql://`` / ``postgres://`` DSN."""
    if storage in ("memory", "null", "none"):
        from services.storage.backends.memory import MemoryBackend

        return MemoryBackend()
    if storage == "sqlite":
        from services.storage.backends.sqlite import SqliteBackend

        return SqliteBackend(sqlite_path, compact_after=compact_after)
    if storage.startswith(("postgresql://", "postgres://")):
        from services.storage.backends.postgres import PostgresBackend

        return PostgresBackend(storage, schema=pg_schema)
    raise ValueError(
        f"unknown storage {storage!r}: expected sqlite, memory, or a postgresql:// DSN"
    )


__all__ = [
    "Backend",
    "Compacting",
    "CountersChunk",
    "LoadChunk",
    "LogChunk",
    "LwwChunk",
    "MapsChunk",
    "OrChunk",
    "SnapshotChunk",
    "WriteBatch",
    "has_or",
    "lww_rows",
    "open_backend",
    "or_rows",
]
