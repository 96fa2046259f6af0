"""The ``POST /sync`` request body (PROTOCOL.md 11.1)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from libs.crdt.hlc import Timestamp
from libs.wire.errors import BadFrame
from libs.wire.fields import (
    bad,
    opt_int,
    opt_str,
    prefixed,
    req_str,
    timestamp,
)
from libs.wire.search import SearchOptions, parse_search_options
from libs.wire.writes import (
    ClientOp,
    op_from_wire,
)


@dataclass(frozen=True, slots=True)
class SyncMapRequest:
    map_name: str
    last_sync_timestamp: Timestamp | None


@dataclass(frozen=True, slots=True)
class HttpQuery:
    query_id: str
    map_name: str
    filter: Mapping[str, Any] | None = None
    limit: int | None = None
    offset: int | None = None
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class HttpSearch:
    search_id: str
    map_name: str
    query: str
    options: SearchOptions


@dataclass(frozen=True, slots=True)
class HttpSyncRequest:
    """A ``POST /sync`` body. An empty body is an empty request (no client id or clock)."""

    client_id: str | None = None
    client_hlc: Timestamp | None = None
    operations: tuple[ClientOp, ...] = ()
    sync_maps: tuple[SyncMapRequest, ...] = ()
    queries: tuple[HttpQuery, ...] = ()
    searches: tuple[HttpSearch, ...] = ()


def _items(body: Mapping[Any, Any], name: str) -> list[Any]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad(name, "an array", value)
    return value


def parse_http_sync_request(body: Any) -> HttpSyncRequest:
    """A decoded ``/sync`` body (``None`` for an empty one)."""
    if body is None:
        return HttpSyncRequest()
    if not isinstance(body, Mapping):
        raise bad("body", "a map {clientId, clientHlc, ...}", body)
    hlc_raw = body.get("clientHlc")
    ops = []
    for i, raw in enumerate(_items(body, "operations")):
        try:
            ops.append(op_from_wire(raw))
        except BadFrame as err:
            raise prefixed(f"operations[{i}]", err) from None
    sync_maps = []
    for i, raw in enumerate(_items(body, "syncMaps")):
        where = f"syncMaps[{i}]"
        if not isinstance(raw, Mapping):
            raise bad(where, "a map {mapName, lastSyncTimestamp}", raw)
        ts = raw.get("lastSyncTimestamp")
        sync_maps.append(
            SyncMapRequest(
                req_str(raw, "mapName", f"{where}.mapName"),
                None if ts is None else timestamp(ts, f"{where}.lastSyncTimestamp"),
            )
        )
    queries = []
    for i, raw in enumerate(_items(body, "queries")):
        where = f"queries[{i}]"
        if not isinstance(raw, Mapping):
            raise bad(where, "a map {queryId, mapName, filter?}", raw)
        flt = raw.get("filter")
        if flt is not None and not isinstance(flt, Mapping):
            raise bad(f"{where}.filter", "a map of field to value", flt)
        queries.append(
            HttpQuery(
                req_str(raw, "queryId", f"{where}.queryId"),
                req_str(raw, "mapName", f"{where}.mapName"),
                flt,
                opt_int(raw, "limit", f"{where}.limit"),
                opt_int(raw, "offset", f"{where}.offset"),
                opt_str(raw, "cursor", f"{where}.cursor"),
            )
        )
    searches = []
    for i, raw in enumerate(_items(body, "searches")):
        where = f"searches[{i}]"
        if not isinstance(raw, Mapping):
            raise bad(where, "a map {searchId, mapName, query}", raw)
        searches.append(
            HttpSearch(
                req_str(raw, "searchId", f"{where}.searchId"),
                req_str(raw, "mapName", f"{where}.mapName"),
                req_str(raw, "query", f"{where}.query"),
                parse_search_options(raw.get("options"), f"{where}.options"),
            )
        )
    return HttpSyncRequest(
        opt_str(body, "clientId"),
        None if hlc_raw is None else timestamp(hlc_raw, "clientHlc"),
        tuple(ops),
        tuple(sync_maps),
        tuple(queries),
        tuple(searches),
    )


__all__ = [
    "HttpQuery",
    "HttpSearch",
    "HttpSyncRequest",
    "SyncMapRequest",
    "parse_http_sync_request",
]
