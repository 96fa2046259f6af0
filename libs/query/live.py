"""The server-side state of one live query: changes in, ``QUERY_UPDATE`` events out.

:class:`LiveQuery` keeps the current result set of a subscription and turns every change to
its map (``apply_change(key, new_value)``, ``None`` for a removal) into the
ENTER/UPDATE/LEAVE events of PROTOCOL.md 6.4. It is pure: no I/O, no clock.

Unbounded query (no ``limit``): ENTER when a key starts matching, UPDATE when a matching key
changes and still matches, LEAVE when it stops matching or is removed.

Bounded query (``limit`` N, ordered by ``sort`` then key): the window is the first N
matching rows. The live query also keeps up to ``reserve`` (default N) further rows, the
candidates for promotion, and maintains the invariant that window + reserve is a *prefix* of
all matching rows in order. Then:

* a row that ranks into the window: LEAVE for the row it displaces, then ENTER for it;
* a change inside the window that stays inside it (including a reorder): UPDATE;
* an in-window row that is removed, stops matching or ranks out of the window: LEAVE for
  it, then ENTER for the row promoted from the reserve;
* anything that happens wholly outside the window: no event.

LEAVE carries ``value=None``; ENTER and UPDATE carry the value projected to the query's
``fields``. With a valid cursor, rows at or before the cursor position never match.

**Refills.** A row that ranks after the last kept row is not kept when rows beyond the
prefix may exist (they were never loaded). When removals drain the reserve so that at most
N rows are kept while unloaded rows may still exist, :attr:`LiveQuery.needs_refill` turns
true: the owner should re-run the query and pass the rows to :meth:`LiveQuery.refill`, which
rebuilds the state and returns the events that bring the client from the old window to the
new one. Until then the window may be short of rows (never wrong about the rows it shows).
A live query built from every matching row (``complete=True``, the default) with at most
N + reserve of them never needs a refill.

**GROUP BY.** Each matching row belongs to one group; a change takes the old row out of its
group and adds the new one (count, sum and avg stay exact; a group whose minimum or maximum
was taken out is recomputed from its rows) and emits ENTER (new group), UPDATE (changed
group) or LEAVE (group emptied) for the group row, through the same window when a ``limit``
is set. A grouped live query keeps every matching row, so it never needs a refill.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from libs.query.aggregate import GroupAccumulator
from libs.query.evaluate import Row, cursor_position, cursor_status, now_millis
from libs.query.model import Query
from libs.query.projection import project
from libs.query.sorting import SortKeyFn

ChangeType = Literal["ENTER", "UPDATE", "LEAVE"]


@dataclass(frozen=True, slots=True)
class QueryUpdate:
    """One ``QUERY_UPDATE``: ENTER/UPDATE carry the projected value, LEAVE carries ``None``."""

    change_type: ChangeType
    key: str
    value: Any

    def to_payload(self, query_id: str) -> dict[str, Any]:
        return {
            "queryId": query_id,
            "key": self.key,
            "value": self.value,
            "changeType": self.change_type,
        }


_Event = tuple[ChangeType, str, Any]


class _Window:
    """Ordered result state over rows that already passed the filter."""

    def __init__(
        self,
        key_of: SortKeyFn,
        limit: int | None,
        reserve: int | None,
        position: tuple[Any, ...] | None,
    ) -> None:
        self.key_of = key_of
        self.limit = limit
        self.capacity = None if limit is None or reserve is None else limit + reserve
        # The reserve has run dry when no more than ``limit`` rows are kept; with no reserve
        # at all, when the window itself is short.
        self.refill_below = None if limit is None else limit + (1 if reserve != 0 else 0)
        self.position = position
        self.entries: dict[str, tuple[tuple[Any, ...], Any]] = {}
        self.order: list[tuple[Any, ...]] = []  # sort keys of kept rows, bounded only
        self.complete = True

    def _after_cursor(self, sk: tuple[Any, ...]) -> bool:
        return self.position is None or sk > self.position

    def load(self, rows: Iterable[Row], complete: bool) -> None:
        key_of = self.key_of
        keyed = [(key_of(k, v), k, v) for k, v in rows]
        keyed = [item for item in keyed if self._after_cursor(item[0])]
        self.entries = {}
        self.order = []
        self.complete = complete
        if self.limit is None:
            self.entries = {k: (sk, v) for sk, k, v in keyed}
            return
        keyed.sort(key=lambda item: item[0])
        if self.capacity is not None and len(keyed) > self.capacity:
            del keyed[self.capacity :]
            self.complete = False
        self.order = [sk for sk, _, _ in keyed]
        self.entries = {k: (sk, v) for sk, k, v in keyed}

    @property
    def needs_refill(self) -> bool:
        return (
            self.refill_below is not None
            and not self.complete
            and len(self.order) < self.refill_below
        )

    def window(self) -> list[Row]:
        if self.limit is None:
            ordered = sorted(self.entries.items(), key=lambda item: item[1][0])
            return [(k, sv[1]) for k, sv in ordered]
        return [(sk[-1], self.entries[sk[-1]][1]) for sk in self.order[: self.limit]]

    def apply(self, key: str, value: Any) -> list[_Event]:
        """``value`` is the row's new value when it matches the filter, else ``None``."""
        if self.limit is None:
            return self._apply_unbounded(key, value)
        return self._apply_bounded(key, value, self.limit)

    def _apply_unbounded(self, key: str, value: Any) -> list[_Event]:
        if value is not None:
            sk = self.key_of(key, value)
            if not self._after_cursor(sk):
                value = None
        was_in = key in self.entries
        if value is None:
            if was_in:
                del self.entries[key]
                return [("LEAVE", key, None)]
            return []
        self.entries[key] = (sk, value)
        return [("UPDATE" if was_in else "ENTER", key, value)]

    def _apply_bounded(self, key: str, value: Any, n: int) -> list[_Event]:
        order = self.order
        entries = self.entries
        boundary = order[-1] if order else None
        was_in = now_in = False
        old = entries.pop(key, None)
        if old is not None:
            i = bisect_left(order, old[0])
            was_in = i < n
            del order[i]
        if value is not None:
            sk = self.key_of(key, value)
            # Keep the row only where the kept rows are known to be every matching row.
            keep = self._after_cursor(sk) and (
                self.complete or (boundary is not None and not boundary < sk)
            )
            if keep:
                j = bisect_left(order, sk)
                order.insert(j, sk)
                entries[key] = (sk, value)
                now_in = j < n

        events: list[_Event] = []
        if was_in and now_in:
            events.append(("UPDATE", key, value))
        elif was_in:
            events.append(("LEAVE", key, None))
            if len(order) >= n:
                promoted = order[n - 1][-1]
                events.append(("ENTER", promoted, entries[promoted][1]))
        elif now_in:
            if len(order) > n:
                events.append(("LEAVE", order[n][-1], None))
            events.append(("ENTER", key, value))

        if self.capacity is not None and len(order) > self.capacity:
            for dropped in order[self.capacity :]:
                del entries[dropped[-1]]
            del order[self.capacity :]
            self.complete = False
        return events


class LiveQuery:
    """One subscription's result set, maintained change by change (see the module docs)."""

    def __init__(
        self,
        query: Query,
        initial_rows: Iterable[Row],
        *,
        now_ms: int | None = None,
        complete: bool = True,
        reserve: int | None = None,
    ) -> None:
        """``initial_rows`` are ``(key, value)`` pairs of the map's live records.

        ``complete=False`` says they may be only the first rows of the query's order (e.g.
        the top limit + reserve matching rows from a pushed-down scan); other matching rows
        may exist. ``reserve`` is how many out-of-window candidates to keep (default: the
        limit, as HEAD does). ``now_ms`` is the time a cursor is checked against.
        """
        if query.group_by and not complete:
            raise ValueError("a GROUP BY live query needs every matching row")
        self.query = query
        status, cursor = cursor_status(query, now_ms if now_ms is not None else now_millis())
        self.cursor_status = status
        position = cursor_position(query, cursor) if cursor is not None else None
        if query.group_by:
            reserve_rows = None  # every group is kept: groups are recomputed, never reloaded
        else:
            reserve_rows = query.limit if reserve is None else max(0, reserve)
        self._window = _Window(query.key_of, query.limit, reserve_rows, position)
        self._project = query.fields is not None and not query.group_by
        self._groups: dict[str, dict[str, Any]] = {}
        self._group_of_key: dict[str, str] = {}
        self._grouper = (
            GroupAccumulator(query.group_by, query.aggregations) if query.group_by else None
        )
        self._load(initial_rows, complete)

    # -- state ---------------------------------------------------------------------------

    @property
    def needs_refill(self) -> bool:
        """True when the reserve ran dry and rows beyond it may exist: re-run and refill."""
        return self._window.needs_refill

    @property
    def results(self) -> list[Row]:
        """The current result rows in query order, values projected."""
        return [(k, self._out(v)) for k, v in self._window.window()]

    def keys(self) -> list[str]:
        return [k for k, _ in self._window.window()]

    # -- changes -------------------------------------------------------------------------

    def apply_change(self, key: str, value: Any) -> list[QueryUpdate]:
        """Apply a write (``value``) or a removal (``None``) of ``key``; return the events."""
        if self._grouper is not None:
            return self._emit(self._apply_grouped(key, value))
        matched = value if value is not None and self.query.filter(key, value) else None
        return self._emit(self._window.apply(key, matched))

    def refill(self, rows: Iterable[Row], *, complete: bool = True) -> list[QueryUpdate]:
        """Rebuild from a fresh run of the query; return the events from old to new window."""
        before = dict(self._window.window())
        self._load(rows, complete)
        after = self._window.window()
        after_keys = {k for k, _ in after}
        events: list[_Event] = [("LEAVE", k, None) for k in before if k not in after_keys]
        for k, v in after:
            if k not in before:
                events.append(("ENTER", k, v))
            elif before[k] is not v and before[k] != v:
                events.append(("UPDATE", k, v))
        return self._emit(events)

    # -- internals -----------------------------------------------------------------------

    def _load(self, rows: Iterable[Row], complete: bool) -> None:
        keep = self.query.filter
        matched = [(k, v) for k, v in rows if v is not None and keep(k, v)]
        if self._grouper is None:
            self._window.load(matched, complete)
            return
        self._grouper = GroupAccumulator(self.query.group_by, self.query.aggregations)
        self._groups = {}
        self._group_of_key = {}
        for k, v in matched:
            bucket_id = self._grouper.add(v, k)
            self._groups.setdefault(bucket_id, {})[k] = v
            self._group_of_key[k] = bucket_id
        self._window.load(self._grouper.result(), True)

    def _group_row(self, bucket_id: str) -> dict[str, Any] | None:
        assert self._grouper is not None
        if self._grouper.stale(bucket_id):
            self._grouper.rebuild(bucket_id, self._groups[bucket_id].items())
        return self._grouper.row(bucket_id)

    def _apply_grouped(self, key: str, value: Any) -> list[_Event]:
        grouper = self._grouper
        assert grouper is not None
        old_bucket = self._group_of_key.pop(key, None)
        if old_bucket is not None:
            members = self._groups[old_bucket]
            grouper.remove(members.pop(key), key)
            if not members:
                del self._groups[old_bucket]
        new_bucket = None
        if value is not None and self.query.filter(key, value):
            new_bucket = grouper.add(value, key)
            self._groups.setdefault(new_bucket, {})[key] = value
            self._group_of_key[key] = new_bucket
        events: list[_Event] = []
        for bucket_id in dict.fromkeys((old_bucket, new_bucket)):
            if bucket_id is not None:
                events.extend(self._window.apply(bucket_id, self._group_row(bucket_id)))
        return events

    def _out(self, value: Any) -> Any:
        if self._project and value is not None:
            return project(value, self.query.fields)
        return value

    def _emit(self, events: list[_Event]) -> list[QueryUpdate]:
        return [QueryUpdate(t, k, None if t == "LEAVE" else self._out(v)) for t, k, v in events]
