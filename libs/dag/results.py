"""Result batches → the answer a caller sees.

:func:`query_result` turns the batches of a :func:`~libs.dag.planner.plan_query` DAG into
libs.query's :class:`~libs.query.evaluate.QueryResult` — the page, ``hasMore``, the next cursor
and the cursor status, values decoded and projected — so a ``QUERY_RESP`` built from it is the
one ``evaluate`` would give.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgpack

from libs.dag.batch import VALUE_COLUMN, Batch, concat_batches
from libs.dag.planner import QueryPlan
from libs.dag.values import MISSING
from libs.query.cursor import encode_cursor
from libs.query.evaluate import QueryResult
from libs.query.projection import project
from libs.query.sorting import sort_values

Row = tuple[str, Any]


def batch_rows(batch: Batch, shape: str) -> list[Row]:
    """``(key, value)`` per row: the decoded record value for row plans, the group row (or the
    row's columns) otherwise."""
    if shape == "rows" and VALUE_COLUMN in batch.columns:
        raw = batch.columns[VALUE_COLUMN].to_objects()
        unpackb = msgpack.unpackb
        return [
            (k, None if v is MISSING else unpackb(v, raw=False))
            for k, v in zip(batch.keys.tolist(), raw, strict=True)
        ]
    return list(batch.rows())


def query_result(plan: QueryPlan, batches: Iterable[Batch], *, now_ms: int) -> QueryResult:
    rows = batch_rows(concat_batches(list(batches)), plan.shape)
    cap = plan.page_size
    has_more = cap is not None and len(rows) > cap
    page = rows[:cap] if cap is not None else rows
    query = plan.query
    next_cursor = None
    if has_more and query is not None and query.limit is not None and query.sort and page:
        last_key, last_value = page[-1]
        next_cursor = encode_cursor(
            query.sort,
            sort_values(query.sort, last_key, last_value),
            last_key,
            predicate_hash=query.predicate_hash,
            sort_hash=query.sort_hash,
            timestamp_ms=now_ms,
        )
    if plan.fields is not None and plan.shape == "rows":
        page = [(k, project(v, plan.fields)) for k, v in page]
    return QueryResult(page, has_more, next_cursor, plan.cursor_status)  # type: ignore[arg-type]
