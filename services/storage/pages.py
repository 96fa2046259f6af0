"""Columnar RecordBatch pages built from store rows ``(partition, key, tag, record)``."""

from __future__ import annotations

from services.storage.records import LwwRecord, OrRecord
from topgun_rpc import common_pb2

PUT, REMOVE, OR_ADD, OR_REMOVE = (
    int(common_pb2.PUT),
    int(common_pb2.REMOVE),
    int(common_pb2.OR_ADD),
    int(common_pb2.OR_REMOVE),
)


class RecordPageBuilder:
    """Rows of one map, column by column. ``value`` may be overridden (projection)."""

    __slots__ = (
        "counters",
        "keys",
        "kinds",
        "map_name",
        "millis",
        "node_ids",
        "or_tombstones",
        "partitions",
        "seqs",
        "tags",
        "ttl_ms",
        "values",
    )

    def __init__(self, map_name: str) -> None:
        self.map_name = map_name
        self.keys: list[str] = []
        self.kinds: list[int] = []
        self.millis: list[int] = []
        self.counters: list[int] = []
        self.node_ids: list[str] = []
        self.values: list[bytes] = []
        self.tags: list[str] = []
        self.ttl_ms: list[int] = []
        self.partitions: list[int] = []
        self.seqs: list[int] = []
        self.or_tombstones: list[str] = []

    def __len__(self) -> int:
        return len(self.keys)

    def add(
        self, partition: int, key: str, tag: str, rec: object, value: bytes | None = None
    ) -> None:
        if isinstance(rec, LwwRecord):
            kind = PUT if rec.value else REMOVE
            v = rec.value
            ttl = rec.ttl_ms
        elif isinstance(rec, OrRecord):
            kind = OR_ADD
            v = rec.value
            ttl = rec.ttl_ms
        else:
            kind = OR_REMOVE
            v = b""
            ttl = 0
            self.or_tombstones.append(tag)
        self.keys.append(key)
        self.kinds.append(kind)
        self.millis.append(rec.millis)  # type: ignore[attr-defined]
        self.counters.append(rec.counter)  # type: ignore[attr-defined]
        self.node_ids.append(rec.node_id)  # type: ignore[attr-defined]
        self.values.append(v if value is None else value)
        self.tags.append(tag)
        self.ttl_ms.append(ttl)
        self.partitions.append(partition)
        self.seqs.append(rec.seq)  # type: ignore[attr-defined]

    def build(self) -> common_pb2.RecordBatch:
        n = len(self.keys)
        return common_pb2.RecordBatch(
            map_names=[self.map_name] if n else [],
            map_index=[0] * n,
            keys=self.keys,
            kinds=self.kinds,  # type: ignore[arg-type]
            millis=self.millis,
            counters=self.counters,
            node_ids=self.node_ids,
            values=self.values,
            tags=self.tags,
            ttl_ms=self.ttl_ms,
            partitions=self.partitions,
            or_tombstones=self.or_tombstones,
            seqs=self.seqs,
        )


def lww_partition_page(map_name: str, partition: int, rows: dict[str, LwwRecord]) -> bytes:
    """Every record of one LWW partition (tombstones included), as a serialised RecordBatch:
    the same page ``RecordPageBuilder`` makes from ``iter_records(..., include_tombstones=True)``,
    built a column at a time (compaction writes every record of a changed partition)."""
    n = len(rows)
    if not n:
        return common_pb2.RecordBatch().SerializeToString()
    recs = list(rows.values())
    values = [r.value for r in recs]
    return common_pb2.RecordBatch(
        map_names=[map_name],
        map_index=[0] * n,
        keys=list(rows),
        kinds=[PUT if v else REMOVE for v in values],  # type: ignore[misc]
        millis=[r.millis for r in recs],
        counters=[r.counter for r in recs],
        node_ids=[r.node_id for r in recs],
        values=values,
        tags=[""] * n,
        ttl_ms=[r.ttl_ms for r in recs],
        partitions=[partition] * n,
        seqs=[r.seq for r in recs],
    ).SerializeToString()
