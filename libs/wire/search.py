"""Full-text search requests (PROTOCOL.md section 8)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from libs.wire.errors import BadFrame
from libs.wire.fields import (
    bad,
    number_map,
    opt_int,
    opt_number,
    opt_str_list,
    payload,
    req_str,
)


@dataclass(frozen=True, slots=True)
class SearchOptions:
    limit: int | None = None
    min_score: float | None = None
    boost: dict[str, int | float] | None = None
    fields: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Search:
    request_id: str
    map_name: str
    query: str
    options: SearchOptions


@dataclass(frozen=True, slots=True)
class SearchSub:
    subscription_id: str
    map_name: str
    query: str
    options: SearchOptions


@dataclass(frozen=True, slots=True)
class SearchUnsub:
    subscription_id: str


def parse_search_options(value: Any, field: str = "options") -> SearchOptions:
    if value is None:
        return SearchOptions()
    if not isinstance(value, Mapping):
        raise bad(field, "a map", value)
    limit = opt_int(value, "limit", f"{field}.limit")
    if limit is not None and limit < 0:
        raise BadFrame(f"{field}.limit must not be negative, got {limit}")
    min_score = opt_number(value, "minScore", f"{field}.minScore")
    boost_raw = value.get("boost")
    return SearchOptions(
        limit,
        None if min_score is None else float(min_score),
        None if boost_raw is None else number_map(boost_raw, f"{field}.boost"),
        opt_str_list(value, "fields", f"{field}.fields"),
    )


def parse_search(msg: Mapping[Any, Any]) -> Search:
    """``SEARCH {payload: {requestId, mapName, query, options?}}``."""
    body = payload(msg)
    return Search(
        req_str(body, "requestId", "payload.requestId"),
        req_str(body, "mapName", "payload.mapName"),
        req_str(body, "query", "payload.query"),
        parse_search_options(body.get("options"), "payload.options"),
    )


def parse_search_sub(msg: Mapping[Any, Any]) -> SearchSub:
    """``SEARCH_SUB {payload: {subscriptionId, mapName, query, options?}}``."""
    body = payload(msg)
    return SearchSub(
        req_str(body, "subscriptionId", "payload.subscriptionId"),
        req_str(body, "mapName", "payload.mapName"),
        req_str(body, "query", "payload.query"),
        parse_search_options(body.get("options"), "payload.options"),
    )


def parse_search_unsub(msg: Mapping[Any, Any]) -> SearchUnsub:
    return SearchUnsub(req_str(payload(msg), "subscriptionId", "payload.subscriptionId"))


__all__ = [
    "Search",
    "SearchOptions",
    "SearchSub",
    "SearchUnsub",
    "parse_search",
    "parse_search_options",
    "parse_search_sub",
    "parse_search_unsub",
]
