"""ChangeSet: the changes one batch applied, columnar, shared by the change feed, the writer and
replication (built once per batch, read by all three)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from topgun_rpc import common_pb2


class ChangeSet:
    """Column i of every list describes change i: the resulting record (PUT / REMOVE / OR_ADD /
    OR_REMOVE with the removed tag), its partition, its partition-local seq, and the origin of
    the op that caused it. ``primary`` is true when the changes are on partitions this node is
    the primary of (Apply), false for replicated changes on backup partitions."""

    __slots__ = (
        "_pb",
        "counters",
        "keys",
        "kinds",
        "map_index",
        "map_names",
        "millis",
        "node_ids",
        "origins",
        "partitions",
        "primary",
        "seqs",
        "tags",
        "ttl_ms",
        "values",
    )

    def __init__(self, map_names: Sequence[str] = (), *, primary: bool = True) -> None:
        self.map_names: list[str] = list(map_names)
        self.map_index: list[int] = []
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
        self.origins: list[str] = []
        self.primary = primary
        self._pb: common_pb2.OpBatch | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def append(
        self,
        map_index: int,
        key: str,
        kind: int,
        millis: int,
        counter: int,
        node_id: str,
        value: bytes,
        tag: str,
        ttl_ms: int,
        partition: int,
        seq: int,
        origin: str,
    ) -> None:
        self.map_index.append(map_index)
        self.keys.append(key)
        self.kinds.append(kind)
        self.millis.append(millis)
        self.counters.append(counter)
        self.node_ids.append(node_id)
        self.values.append(value)
        self.tags.append(tag)
        self.ttl_ms.append(ttl_ms)
        self.partitions.append(partition)
        self.seqs.append(seq)
        self.origins.append(origin)
        self._pb = None

    def extend(
        self,
        map_index: int,
        keys: list[str],
        kinds: list[int],
        millis: list[int],
        counters: list[int],
        node_ids: list[str],
        values: list[bytes],
        tags: list[str] | None,
        ttl_ms: list[int],
        partitions: list[int],
        seqs: list[int],
        origins: list[str],
    ) -> None:
        """Append many changes of one map at once (columns of equal length)."""
        n = len(keys)
        self.map_index.extend([map_index] * n)
        self.keys.extend(keys)
        self.kinds.extend(kinds)
        self.millis.extend(millis)
        self.counters.extend(counters)
        self.node_ids.extend(node_ids)
        self.values.extend(values)
        self.tags.extend([""] * n if tags is None else tags)
        self.ttl_ms.extend(ttl_ms)
        self.partitions.extend(partitions)
        self.seqs.extend(seqs)
        self.origins.extend(origins)
        self._pb = None

    def op_batch(self) -> common_pb2.OpBatch:
        """All changes as one OpBatch (built once, then shared)."""
        if self._pb is None:
            self._pb = common_pb2.OpBatch(
                map_names=self.map_names,
                map_index=self.map_index,
                keys=self.keys,
                kinds=self.kinds,  # type: ignore[arg-type]
                millis=self.millis,
                counters=self.counters,
                node_ids=self.node_ids,
                values=self.values,
                tags=self.tags,
                ttl_ms=self.ttl_ms,
                partitions=self.partitions,
                origins=self.origins,
            )
        return self._pb

    def select(self, indices: Sequence[int]) -> ChangeSet:
        """A ChangeSet of the changes at ``indices`` (same map table)."""
        out = ChangeSet(self.map_names, primary=self.primary)
        for name in (
            "map_index",
            "keys",
            "kinds",
            "millis",
            "counters",
            "node_ids",
            "values",
            "tags",
            "ttl_ms",
            "partitions",
            "seqs",
            "origins",
        ):
            col = getattr(self, name)
            setattr(out, name, [col[i] for i in indices])
        return out

    def filter(
        self, map_names: Collection[str] | None, partitions: Collection[int] | None
    ) -> ChangeSet:
        """The changes of ``map_names`` (None = all) on ``partitions`` (None = all)."""
        if map_names is None and partitions is None:
            return self
        wanted_maps = (
            None
            if map_names is None
            else {i for i, n in enumerate(self.map_names) if n in map_names}
        )
        idx = [
            i
            for i, (mi, p) in enumerate(zip(self.map_index, self.partitions, strict=True))
            if (wanted_maps is None or mi in wanted_maps)
            and (partitions is None or p in partitions)
        ]
        if len(idx) == len(self.keys):
            return self
        return self.select(idx)

    @staticmethod
    def concat(sets: Sequence[ChangeSet]) -> ChangeSet:
        """One ChangeSet holding ``sets`` one after the other."""
        if len(sets) == 1:
            return sets[0]
        names: dict[str, int] = {}
        out = ChangeSet(primary=all(s.primary for s in sets))
        for s in sets:
            remap = [names.setdefault(n, len(names)) for n in s.map_names]
            out.map_index.extend(remap[i] for i in s.map_index)
            out.keys.extend(s.keys)
            out.kinds.extend(s.kinds)
            out.millis.extend(s.millis)
            out.counters.extend(s.counters)
            out.node_ids.extend(s.node_ids)
            out.values.extend(s.values)
            out.tags.extend(s.tags)
            out.ttl_ms.extend(s.ttl_ms)
            out.partitions.extend(s.partitions)
            out.seqs.extend(s.seqs)
            out.origins.extend(s.origins)
        out.map_names = list(names)
        return out
