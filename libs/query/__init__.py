"""The TopGun query language as pure, synchronous Python (PROTOCOL.md section 6).

* :func:`compile_filter` — predicate trees and where-maps compiled once into a
  ``(key, value) -> bool`` closure; :class:`QueryError` for malformed input.
* :func:`project` — keep the listed top-level fields.
* :func:`parse_sort`, :class:`SortSpec`, :func:`sort_key` — both sort shapes, one total order.
* :func:`parse_query`, :class:`Query` — a validated ``QUERY_SUB`` query.
* :func:`evaluate`, :class:`QueryResult` — the one-shot reference evaluation.
* :class:`GroupAccumulator` — GROUP BY aggregates in partial/combine form.
* :func:`encode_cursor`, :func:`decode_cursor` — HEAD-format pagination cursors.
* :class:`LiveQuery`, :class:`QueryUpdate` — a subscription's window and its
  ENTER/UPDATE/LEAVE events.

No I/O anywhere; time is passed in.
"""

from libs.query.aggregate import GroupAccumulator
from libs.query.cursor import (
    CURSOR_MAX_AGE_MS,
    Cursor,
    CursorStatus,
    check_cursor,
    decode_cursor,
    encode_cursor,
)
from libs.query.errors import QueryError
from libs.query.evaluate import MAX_RESULTS, QueryResult, evaluate, matching_rows
from libs.query.live import ChangeType, LiveQuery, QueryUpdate
from libs.query.model import Aggregation, Query, parse_query
from libs.query.predicate import Filter, compile_filter, field_getter
from libs.query.projection import project
from libs.query.sorting import SortField, SortSpec, parse_sort, sort_key

__all__ = [
    "CURSOR_MAX_AGE_MS",
    "MAX_RESULTS",
    "Aggregation",
    "ChangeType",
    "Cursor",
    "CursorStatus",
    "Filter",
    "GroupAccumulator",
    "LiveQuery",
    "Query",
    "QueryError",
    "QueryResult",
    "QueryUpdate",
    "SortField",
    "SortSpec",
    "check_cursor",
    "compile_filter",
    "decode_cursor",
    "encode_cursor",
    "evaluate",
    "field_getter",
    "matching_rows",
    "parse_query",
    "parse_sort",
    "project",
    "sort_key",
]
