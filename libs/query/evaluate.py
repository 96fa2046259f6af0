"""One-shot evaluation of a query over a set of rows: the reference for every other executor.

``evaluate`` does, in this order and nothing more: filter; GROUP BY (when asked; the group
rows then stand in for the records); drop rows at or before a valid cursor; sort by
:func:`~libs.query.sorting.sort_key` (key order when there is no sort); cut at ``limit`` and
at :data:`MAX_RESULTS` (HEAD's 10 000-row clamp), setting ``has_more`` when rows were cut;
make ``next_cursor`` from the last row when rows were cut, ``limit`` is set and ``sort`` is
not empty (as HEAD does); project each value to ``fields`` (group rows are never projected).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from libs.query.aggregate import GroupAccumulator
from libs.query.cursor import Cursor, CursorStatus, check_cursor, encode_cursor
from libs.query.model import Query
from libs.query.projection import project
from libs.query.sorting import key_from_values, sort_values

MAX_RESULTS: Final = 10_000

Row = tuple[str, Any]


@dataclass(frozen=True, slots=True)
class QueryResult:
    """The answer to a query: the page of rows and how to continue."""

    results: list[Row] = field(default_factory=list)
    has_more: bool = False
    next_cursor: str | None = None
    cursor_status: CursorStatus = "none"

    def to_payload(self, query_id: str) -> dict[str, Any]:
        """The ``QUERY_RESP`` payload (no ``merkleRootHash``; ``nextCursor`` only when set)."""
        payload: dict[str, Any] = {
            "queryId": query_id,
            "results": [{"key": k, "value": v} for k, v in self.results],
            "hasMore": self.has_more,
            "cursorStatus": self.cursor_status,
        }
        if self.next_cursor is not None:
            payload["nextCursor"] = self.next_cursor
        return payload


def now_millis() -> int:
    """Wall-clock milliseconds, read only at the edges when a caller passes no time."""
    return int(time.time() * 1000)


def cursor_status(query: Query, now_ms: int) -> tuple[CursorStatus, Cursor | None]:
    """The status of ``query.cursor`` at ``now_ms`` and its position when valid."""
    return check_cursor(
        query.cursor,
        predicate_hash=query.predicate_hash,
        sort_hash=query.sort_hash,
        spec=query.sort,
        now_ms=now_ms,
    )


def cursor_position(query: Query, cursor: Cursor) -> tuple[Any, ...]:
    """The sort key of a cursor's row: rows with a greater key come after it."""
    return key_from_values(query.sort, cursor.sort_values, cursor.last_key)


def matching_rows(query: Query, rows: Iterable[Row]) -> list[Row]:
    """Filter, then GROUP BY when the query asks for it."""
    keep = query.filter
    matched = [(k, v) for k, v in rows if keep(k, v)]
    if query.group_by:
        acc = GroupAccumulator(query.group_by, query.aggregations).add_all(matched)
        return list(acc.result())
    return matched


def evaluate(
    query: Query,
    rows: Iterable[Row],
    *,
    now_ms: int | None = None,
    max_results: int = MAX_RESULTS,
) -> QueryResult:
    """Answer ``query`` over ``rows`` (``(key, decoded value)`` pairs, live records only).

    ``now_ms`` is the time cursors are checked against and stamped with; when omitted the
    wall clock is read.
    """
    now = now_ms if now_ms is not None else now_millis()
    status, cursor = cursor_status(query, now)
    candidates = matching_rows(query, rows)
    key_of = query.key_of
    if cursor is not None:
        position = cursor_position(query, cursor)
        candidates = [(k, v) for k, v in candidates if key_of(k, v) > position]

    cap = max_results if query.limit is None else min(query.limit, max_results)
    if cap < len(candidates):
        page = heapq.nsmallest(cap, candidates, key=lambda row: key_of(row[0], row[1]))
        has_more = True
    else:
        page = sorted(candidates, key=lambda row: key_of(row[0], row[1]))
        has_more = False

    next_cursor = None
    if has_more and query.limit is not None and query.sort and page:
        last_key, last_value = page[-1]
        next_cursor = encode_cursor(
            query.sort,
            sort_values(query.sort, last_key, last_value),
            last_key,
            predicate_hash=query.predicate_hash,
            sort_hash=query.sort_hash,
            timestamp_ms=now,
        )

    if query.fields is not None and not query.group_by:
        fields = query.fields
        page = [(k, project(v, fields)) for k, v in page]
    return QueryResult(page, has_more, next_cursor, status)
