"""Requests this server answers with "not available": SQL (10.6), entry processors (10.3) and
conflict resolvers (10.4).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from libs.wire.fields import (
    opt_str,
    opt_str_list,
    payload,
    req_str,
)


@dataclass(frozen=True, slots=True)
class SqlQuery:
    query_id: str
    sql: str


@dataclass(frozen=True, slots=True)
class StubRequest:
    """A request this server answers with a fixed "not available" reply: ``ENTRY_PROCESS``,
    ``ENTRY_PROCESS_BATCH``, ``REGISTER_RESOLVER``, ``UNREGISTER_RESOLVER``, ``LIST_RESOLVERS``.
    ``keys`` holds the batch keys of ``ENTRY_PROCESS_BATCH``."""

    type: str
    request_id: str
    map_name: str | None = None
    keys: tuple[str, ...] = ()


def parse_sql_query(msg: Mapping[Any, Any]) -> SqlQuery:
    body = payload(msg)
    return SqlQuery(
        req_str(body, "queryId", "payload.queryId"), req_str(body, "sql", "payload.sql")
    )


def parse_stub_request(msg: Mapping[Any, Any]) -> StubRequest:
    """The flat entry-processor and resolver requests (PROTOCOL.md 10.3, 10.4)."""
    kind = msg["type"]
    keys: tuple[str, ...] = ()
    if kind == "ENTRY_PROCESS_BATCH":
        keys = opt_str_list(msg, "keys") or ()
    return StubRequest(kind, req_str(msg, "requestId"), opt_str(msg, "mapName"), keys)


__all__ = [
    "SqlQuery",
    "StubRequest",
    "parse_sql_query",
    "parse_stub_request",
]
