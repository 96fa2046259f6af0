"""Hybrid logical clock and its timestamps (``packages/core/src/HLC.ts``, CRDT.md section 4).

Timestamps order by ``(millis, counter, node_id)``. The node-id tie-break is TopGun's
``localeCompare`` (see :mod:`libs.crdt.collation`): merges decide with :func:`compare_timestamps`
or :func:`timestamp_after`. The named tuple's own ``<`` compares node ids by code point, which is
the same order for ids made of ``[0-9a-z-]``; use it only where no merge decision hangs on it.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from libs.crdt.collation import compare_node_ids, node_id_after

log = logging.getLogger(__name__)

DEFAULT_MAX_DRIFT_MS = 60_000
_PARSE_INT_RE = re.compile(r"\s*([+-]?[0-9]+)")

Clock = Callable[[], int]


class InvalidNodeId(ValueError):
    """A node id contains ``:``, the separator of the timestamp string form."""


class ClockDriftError(ValueError):
    """A remote timestamp is further ahead of the wall clock than a strict HLC allows."""


class Timestamp(NamedTuple):
    """An HLC timestamp; ``str(ts)`` is ``"millis:counter:nodeId"`` (also an OR-map tag).

    Immutable and ordered by ``(millis, counter, node_id)``. A named tuple rather than a
    dataclass: the merge path builds and compares one per op, and a tuple does both in C.
    """

    millis: int
    counter: int
    node_id: str

    def __str__(self) -> str:
        return f"{self.millis}:{self.counter}:{self.node_id}"

    @classmethod
    def parse(cls, s: str) -> Timestamp:
        """``HLC.parse``: exactly three ``:``-separated parts, numbers read like ``parseInt``
        (``"0012"`` is 12, ``"1.9"`` is 1). Where JavaScript would produce ``NaN`` this raises
        ``ValueError``, since such a timestamp cannot be ordered."""
        parts = s.split(":")
        if len(parts) != 3:
            raise ValueError(f"Invalid timestamp format: {s}")
        millis = _parse_int(parts[0])
        counter = _parse_int(parts[1])
        if millis is None or counter is None:
            raise ValueError(f"Invalid timestamp format: {s} (millis and counter must be integers)")
        return cls(millis, counter, parts[2])

    @classmethod
    def from_wire(cls, m: Mapping[str, Any]) -> Timestamp:
        """A timestamp from a decoded client frame: ``{"millis", "counter", "nodeId"}``.

        millis and counter may be floats (msgpack float64) with integral values; anything else
        raises ``ValueError`` naming the bad field.
        """
        if not isinstance(m, Mapping):
            raise ValueError(f"timestamp must be a map, got {type(m).__name__}")
        millis = _wire_int(m, "millis")
        counter = _wire_int(m, "counter")
        node_id = m.get("nodeId")
        if not isinstance(node_id, str):
            if "nodeId" not in m:
                raise ValueError("timestamp.nodeId is missing")
            raise ValueError(f"timestamp.nodeId must be a string, got {type(node_id).__name__}")
        return cls(millis, counter, node_id)

    def to_wire(self) -> dict[str, Any]:
        return {"millis": self.millis, "counter": self.counter, "nodeId": self.node_id}


def _parse_int(s: str) -> int | None:
    m = _PARSE_INT_RE.match(s)
    return int(m.group(1)) if m else None


def _wire_int(m: Mapping[str, Any], field: str) -> int:
    if field not in m:
        raise ValueError(f"timestamp.{field} is missing")
    v = m[field]
    if type(v) is int:
        if v < 0:
            raise ValueError(f"timestamp.{field} must not be negative, got {v}")
        return v
    if type(v) is float:
        if not math.isfinite(v) or not v.is_integer():
            raise ValueError(f"timestamp.{field} must be an integer, got {v!r}")
        if v < 0:
            raise ValueError(f"timestamp.{field} must not be negative, got {v!r}")
        return int(v)
    raise ValueError(f"timestamp.{field} must be a number, got {type(v).__name__}")


def compare_timestamps(a: Timestamp, b: Timestamp) -> int:
    """-1, 0 or 1 as ``a`` is before, equal to or after ``b``: millis, then counter, then the
    node id as TopGun's ``localeCompare`` ranks it (``HLC.compare``'s sign)."""
    if a[0] != b[0]:
        return -1 if a[0] < b[0] else 1
    if a[1] != b[1]:
        return -1 if a[1] < b[1] else 1
    return compare_node_ids(a[2], b[2])


def timestamp_after(a: Timestamp, b: Timestamp) -> bool:
    """True when ``a`` is strictly after ``b``: the LWW rule for replacing a record."""
    if a[0] != b[0]:
        return a[0] > b[0]
    if a[1] != b[1]:
        return a[1] > b[1]
    return node_id_after(a[2], b[2])


def system_clock_ms() -> int:
    """Milliseconds since the epoch from the system clock (``Date.now()``)."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class HlcState:
    last_millis: int
    last_counter: int


def _js_number(v: Any) -> float | None:
    """``Number(v)`` for the values a decoded frame can hold; ``None`` where JavaScript gives
    a non-finite number (or for a missing field)."""
    if v is None:  # Number(null) === 0
        return 0.0
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, int):
        return float(v) if abs(v) < 2**63 else None
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, str):
        s = v.strip()
        if s == "":
            return 0.0
        try:
            f = float(s)
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


class HLC:
    """A hybrid logical clock. ``clock`` returns the wall-clock time in epoch milliseconds."""

    __slots__ = ("_clock", "_last_counter", "_last_millis", "max_drift_ms", "node_id", "strict")

    def __init__(
        self,
        node_id: str,
        clock: Clock = system_clock_ms,
        max_drift_ms: int = DEFAULT_MAX_DRIFT_MS,
        strict: bool = False,
    ) -> None:
        if ":" in node_id:
            raise InvalidNodeId(
                'Node ID must not contain ":" (used as delimiter in timestamp format)'
            )
        self.node_id = node_id
        self._clock = clock
        self.max_drift_ms = max_drift_ms
        self.strict = strict
        self._last_millis = 0
        self._last_counter = 0

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def state(self) -> HlcState:
        return HlcState(self._last_millis, self._last_counter)

    def wall(self) -> int:
        """The clock source's current reading."""
        return self._clock()

    def now(self) -> Timestamp:
        """A new timestamp for a local event."""
        wall = self._clock()
        if wall > self._last_millis:
            self._last_millis = wall
            self._last_counter = 0
        else:
            self._last_counter += 1
        return Timestamp(self._last_millis, self._last_counter, self.node_id)

    def update(self, remote: Timestamp | Mapping[str, Any]) -> None:
        """Advance on receiving ``remote`` (a ``Timestamp`` or a wire mapping).

        A mapping whose millis or counter is missing or not a finite number leaves the clock
        unchanged, as in TopGun. In strict mode a remote more than ``max_drift_ms`` ahead of the
        wall clock raises ``ClockDriftError``; otherwise the clock fast-forwards.
        """
        if isinstance(remote, Timestamp):
            rm = remote.millis
            rc = remote.counter
        else:
            fm = _js_number(remote["millis"]) if "millis" in remote else None
            fc = _js_number(remote["counter"]) if "counter" in remote else None
            if fm is None or fc is None or not fm.is_integer() or not fc.is_integer():
                return
            rm = int(fm)
            rc = int(fc)
        wall = self._clock()
        drift = rm - wall
        if drift > self.max_drift_ms:
            if self.strict:
                raise ClockDriftError(
                    f"Clock drift detected: Remote time {rm} is {drift}ms ahead of local "
                    f"{wall} (threshold: {self.max_drift_ms}ms)"
                )
            log.warning(
                "clock drift: remote time %d is %dms ahead of local %d (threshold %dms)",
                rm,
                drift,
                wall,
                self.max_drift_ms,
            )
        last = self._last_millis
        m = max(last, wall, rm)
        if m == last and m == rm:
            self._last_counter = max(self._last_counter, rc) + 1
        elif m == last:
            self._last_counter += 1
        elif m == rm:
            self._last_counter = rc + 1
        else:
            self._last_counter = 0
        self._last_millis = m
