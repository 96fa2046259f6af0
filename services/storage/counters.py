"""PN counters: per counter name, per node, the largest positive and negative totals seen.

Merging takes the per-node max of each side (CRDT.md 7), so merges commute and repeat safely.
States persist as msgpack ``{"p": {...}, "n": {...}}``.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgpack


class CounterStore:
    def __init__(self) -> None:
        self._states: dict[str, tuple[dict[str, float], dict[str, float]]] = {}

    def __len__(self) -> int:
        return len(self._states)

    def names(self) -> list[str]:
        return list(self._states)

    def get(self, name: str) -> tuple[dict[str, float], dict[str, float]]:
        pos, neg = self._states.get(name, ({}, {}))
        return dict(pos), dict(neg)

    def merge(
        self, name: str, positive: Mapping[str, float], negative: Mapping[str, float]
    ) -> bool:
        """Merge a remote state; True if ours changed."""
        pos, neg = self._states.setdefault(name, ({}, {}))
        changed = False
        for side, remote in ((pos, positive), (neg, negative)):
            for node, v in remote.items():
                if v != v or v < 0:  # NaN or negative totals are not valid states
                    continue
                cur = side.get(node)
                if cur is None or v > cur:
                    side[node] = float(v)
                    changed = changed or cur is not None or v > 0
        return changed

    def encode(self, name: str) -> bytes:
        pos, neg = self._states.get(name, ({}, {}))
        return msgpack.packb({"p": pos, "n": neg}, use_bin_type=True)

    def load(self, name: str, data: bytes) -> None:
        state = msgpack.unpackb(data, raw=False)
        self._states[name] = (
            {str(k): float(v) for k, v in state.get("p", {}).items()},
            {str(k): float(v) for k, v in state.get("n", {}).items()},
        )
