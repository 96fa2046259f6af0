"""OpBatchBuilder: collect ops column by column, build one columnar OpBatch.

Partitions are computed for the whole batch at build time (numpy FNV-1a), never op by op.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from libs.crdt.hashing import partitions_of
from topgun_rpc import common_pb2


class OpBatchBuilder:
    """Columns of a batch of CRDT ops for many maps and partitions.

    ``append`` returns the op's index in the batch; per-op answers (statuses) come back in that
    order.
    """

    __slots__ = (
        "_counters",
        "_keys",
        "_kinds",
        "_map_index",
        "_map_names",
        "_millis",
        "_node_ids",
        "_origins",
        "_partitions",
        "_tags",
        "_ttl_ms",
        "_values",
    )

    def __init__(self) -> None:
        self._map_names: dict[str, int] = {}
        self._map_index: list[int] = []
        self._keys: list[str] = []
        self._kinds: list[int] = []
        self._millis: list[int] = []
        self._counters: list[int] = []
        self._node_ids: list[str] = []
        self._values: list[bytes] = []
        self._tags: list[str] = []
        self._ttl_ms: list[int] = []
        self._origins: list[str] = []
        self._partitions: npt.NDArray[np.uint16] | None = None

    def __len__(self) -> int:
        return len(self._keys)

    def append(
        self,
        map_name: str,
        key: str,
        kind: int,
        millis: int,
        counter: int,
        node_id: str,
        value_bytes: bytes = b"",
        tag: str = "",
        ttl_ms: int = 0,
        origin: str = "",
    ) -> int:
        """Add one op; ``kind`` is an ``OpKind`` value (PUT, REMOVE, OR_ADD, OR_REMOVE)."""
        mi = self._map_names.get(map_name)
        if mi is None:
            mi = self._map_names[map_name] = len(self._map_names)
        self._map_index.append(mi)
        self._keys.append(key)
        self._kinds.append(kind)
        self._millis.append(millis)
        self._counters.append(counter)
        self._node_ids.append(node_id)
        self._values.append(value_bytes)
        self._tags.append(tag)
        self._ttl_ms.append(ttl_ms)
        self._origins.append(origin)
        self._partitions = None
        return len(self._keys) - 1

    @property
    def keys(self) -> Sequence[str]:
        return self._keys

    @property
    def partitions(self) -> npt.NDArray[np.uint16]:
        """The partition of every op, computed once for the whole batch."""
        if self._partitions is None or len(self._partitions) != len(self._keys):
            self._partitions = partitions_of(self._keys)
        return self._partitions

    def build(self) -> common_pb2.OpBatch:
        """The whole batch as one OpBatch."""
        return common_pb2.OpBatch(
            map_names=list(self._map_names),
            map_index=self._map_index,
            keys=self._keys,
            kinds=self._kinds,  # type: ignore[arg-type]
            millis=self._millis,
            counters=self._counters,
            node_ids=self._node_ids,
            values=self._values,
            tags=self._tags,
            ttl_ms=self._ttl_ms,
            partitions=self.partitions.tolist(),
            origins=self._origins,
        )

    def select(self, indices: Sequence[int]) -> common_pb2.OpBatch:
        """An OpBatch holding only the ops at ``indices`` (in that order)."""
        n = len(indices)
        if n == 0:
            return common_pb2.OpBatch()
        parts = self.partitions
        names = list(self._map_names)
        if n == len(self._keys) and (n == 1 or list(indices) == list(range(n))):
            return self.build()
        # itemgetter picks many items in one C call (a tuple; a bare item for one index)
        get = itemgetter(*indices)

        def pick(col: list[Any]) -> Any:
            return get(col) if n > 1 else (get(col),)

        map_index: Any
        if len(names) == 1:
            used_names = names
            map_index = [0] * n
        else:
            used: dict[int, int] = {}
            map_index = []
            for mi in pick(self._map_index):
                j = used.get(mi)
                if j is None:
                    j = used[mi] = len(used)
                map_index.append(j)
            used_names = [names[mi] for mi in used]
        return common_pb2.OpBatch(
            map_names=used_names,
            map_index=map_index,
            keys=pick(self._keys),
            kinds=pick(self._kinds),
            millis=pick(self._millis),
            counters=pick(self._counters),
            node_ids=pick(self._node_ids),
            values=pick(self._values),
            tags=pick(self._tags),
            ttl_ms=pick(self._ttl_ms),
            partitions=parts[np.asarray(indices, dtype=np.intp)].tolist(),
            origins=pick(self._origins),
        )
