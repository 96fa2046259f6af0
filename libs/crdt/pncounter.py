"""Positive-negative counter (``packages/core/src/PNCounter.ts``; CRDT.md section 7).

Two grow-only maps, node id -> amount: ``positive`` and ``negative``; the value is their
difference. Merging takes the per-node maximum, so it commutes, associates and is idempotent.

On the wire the TypeScript client writes ``{positive, negative}`` while TopGun's schema and Rust
server write ``{p, n}``; ``state_from_wire`` accepts both and ``to_wire`` emits both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["PNCounter", "state_from_wire"]

Amounts = dict[str, int | float]


def _amounts(m: Any, field: str) -> Amounts:
    if m is None:
        return {}
    if not isinstance(m, Mapping):
        raise ValueError(f"counter state.{field} must be a map, got {type(m).__name__}")
    out: Amounts = {}
    for node, v in m.items():
        if not isinstance(node, str):
            raise ValueError(f"counter state.{field} keys must be node id strings")
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise ValueError(f"counter state.{field}[{node!r}] must be a non-negative number")
        out[node] = int(v) if type(v) is float and v.is_integer() else v
    return out


def state_from_wire(m: Mapping[str, Any]) -> tuple[Amounts, Amounts]:
    """``(positive, negative)`` from ``{p, n}`` or ``{positive, negative}`` (if both spellings
    are present, their per-node maximum)."""
    if not isinstance(m, Mapping):
        raise ValueError(f"counter state must be a map, got {type(m).__name__}")
    if not any(k in m for k in ("p", "n", "positive", "negative")):
        raise ValueError("counter state needs {p, n} or {positive, negative}")
    pos = _amounts(m.get("positive"), "positive")
    neg = _amounts(m.get("negative"), "negative")
    for node, v in _amounts(m.get("p"), "p").items():
        pos[node] = max(pos.get(node, 0), v)
    for node, v in _amounts(m.get("n"), "n").items():
        neg[node] = max(neg.get(node, 0), v)
    return pos, neg


class PNCounter:
    """One replica of a PN counter; this replica writes under ``node_id``."""

    __slots__ = ("negative", "node_id", "positive")

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.positive: Amounts = {}
        self.negative: Amounts = {}

    @property
    def value(self) -> int | float:
        return sum(self.positive.values()) - sum(self.negative.values())

    def add_and_get(self, delta: int | float) -> int | float:
        """Add ``delta`` (any sign, fractions allowed) under this node; returns the new value."""
        if (
            isinstance(delta, bool)
            or not isinstance(delta, int | float)
            or not math.isfinite(delta)
        ):
            raise ValueError("counter delta must be a finite number")
        if delta > 0:
            self.positive[self.node_id] = self.positive.get(self.node_id, 0) + delta
        elif delta < 0:
            self.negative[self.node_id] = self.negative.get(self.node_id, 0) - delta
        return self.value

    def increment(self) -> int | float:
        return self.add_and_get(1)

    def decrement(self) -> int | float:
        return self.add_and_get(-1)

    def merge(self, state: PNCounter | Mapping[str, Any]) -> bool:
        """Merge another replica or a wire state (either spelling): per-node maximum. Returns
        whether the state changed."""
        if isinstance(state, PNCounter):
            pos, neg = state.positive, state.negative
        else:
            pos, neg = state_from_wire(state)
        changed = False
        for mine, theirs in ((self.positive, pos), (self.negative, neg)):
            for node, v in theirs.items():
                cur = mine.get(node)
                if cur is None or v > cur:
                    mine[node] = v
                    changed = True
        return changed

    def to_wire(self) -> dict[str, Any]:
        """``{p, n, positive, negative}``: readable by the TypeScript client and by TopGun's
        schema alike."""
        return {
            "p": dict(self.positive),
            "n": dict(self.negative),
            "positive": dict(self.positive),
            "negative": dict(self.negative),
        }

    state_from_wire = staticmethod(state_from_wire)

    @classmethod
    def from_wire(cls, node_id: str, m: Mapping[str, Any]) -> PNCounter:
        c = cls(node_id)
        c.positive, c.negative = state_from_wire(m)
        return c

    def __repr__(self) -> str:
        return f"PNCounter({self.node_id!r}, value={self.value})"
