"""Live queries: a handle whose result set the server keeps current, with a local answer first.

``client.query(map, where=..., predicate=..., sort=..., limit=..., fields=...)`` sends
``QUERY_SUB`` and returns a :class:`LiveQuery`. Its rows come from three places:

* the local replica, evaluated with ``libs.query`` as soon as the query opens (the offline
  answer, as the TypeScript client gives it before the server's ``QUERY_RESP``);
* the server: ``QUERY_RESP`` replaces the rows, ``QUERY_UPDATE`` ENTER/UPDATE/LEAVE edits them;
* this client's own writes, which the server does not echo back to their writer: each local
  write re-evaluates its key against the query.

The handle is an async iterator of snapshots (:class:`QueryResult`; a slow reader skips to the
newest) and :meth:`LiveQuery.changes` gives an async iterator of ENTER/UPDATE/LEAVE changes. The
query is subscribed again after every reconnect.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from libs.client import _protocol as proto
from libs.client._feed import Feed, Latest
from libs.client._topics import Sender
from libs.query import Query, evaluate, parse_query, parse_sort, project
from libs.query.sorting import SortSpec

__all__ = ["LiveQuery", "Queries", "QueryChange", "QueryResult", "QuerySpec"]


_NO_SORT = SortSpec()


@dataclass(frozen=True, slots=True)
class QuerySpec:
    """A query as the client holds it, normalised."""

    map_name: str
    where: dict[str, Any] | None = None
    predicate: dict[str, Any] | None = None
    sort: SortSpec = _NO_SORT
    limit: int | None = None
    fields: tuple[str, ...] | None = None

    @classmethod
    def build(
        cls,
        map_name: str,
        *,
        where: Mapping[str, Any] | None = None,
        predicate: Mapping[str, Any] | None = None,
        sort: Any = None,
        limit: int | None = None,
        fields: Sequence[str] | None = None,
    ) -> QuerySpec:
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise ValueError(f"limit must be a non-negative integer, got {limit!r}")
        if isinstance(sort, str):
            sort = [_sort_item(part) for part in sort.split(",") if part.strip()]
        elif isinstance(sort, list | tuple) and sort and isinstance(sort[0], list | tuple):
            sort = [{"field": f, "direction": d} for f, d in sort]
        spec = cls(
            map_name,
            dict(where) if where is not None else None,
            dict(predicate) if predicate is not None else None,
            parse_sort(sort),
            limit,
            tuple(fields) if fields is not None else None,
        )
        spec.compile()  # reject a malformed predicate here, not on the first row
        return spec

    def to_wire(self) -> dict[str, Any]:
        q: dict[str, Any] = {}
        if self.where is not None:
            q["where"] = self.where
        if self.predicate is not None:
            q["predicate"] = self.predicate
        if self.sort:
            q["sort"] = self.sort.to_wire()
        if self.limit is not None:
            q["limit"] = self.limit
        return q

    def compile(self) -> Query:
        """The query as ``libs.query`` evaluates it (filter, sort key, projection)."""
        return parse_query(self.to_wire(), self.fields)


def _sort_item(text: str) -> dict[str, str]:
    name, _, direction = text.strip().partition(":")
    return {"field": name.strip(), "direction": (direction.strip() or "asc").lower()}


@dataclass(frozen=True, slots=True)
class QueryChange:
    """One change of a live query's result set."""

    kind: str  # ENTER | UPDATE | LEAVE
    key: str
    value: Any


@dataclass(frozen=True, slots=True)
class QueryResult:
    """A snapshot of a live query: rows in query order, and where they came from."""

    rows: tuple[tuple[str, Any], ...]
    source: str  # "local" before the server answered, "server" after
    has_more: bool = False
    next_cursor: str | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def keys(self) -> list[str]:
        return [k for k, _ in self.rows]

    def values(self) -> list[Any]:
        return [v for _, v in self.rows]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.rows)


LocalSource = Callable[[str], "Any | None"]
"""Given a map name, the open replica handle (with ``items()`` and ``get()``) or None."""


class LiveQuery:
    """The live result set of one query."""

    def __init__(self, owner: Queries, spec: QuerySpec, feed_size: int) -> None:
        self.id = str(uuid.uuid4())
        self.spec = spec
        self._owner = owner
        self._query = spec.compile()
        self._match = self._query.filter
        self._order = self._query.key_of
        self._rows: dict[str, Any] = {}
        self._source = "local"
        self._has_more = False
        self._next_cursor: str | None = None
        self._latest: Latest[QueryResult] = Latest(self._snapshot)
        self._feeds: list[Feed[QueryChange]] = []
        self._feed_size = feed_size
        self._seen = 0
        self.settled = asyncio.Event()
        self.error: str | None = None

    # --- reading ---

    def _snapshot(self) -> QueryResult:
        order = self._order
        rows = sorted(self._rows.items(), key=lambda kv: order(kv[0], kv[1]))
        if self.spec.limit is not None:
            rows = rows[: self.spec.limit]
        return QueryResult(tuple(rows), self._source, self._has_more, self._next_cursor)

    @property
    def result(self) -> QueryResult:
        """The current snapshot."""
        return self._snapshot()

    async def ready(self, timeout: float = 10.0) -> QueryResult:
        """Wait for the server's first answer; the snapshot then."""
        await asyncio.wait_for(self.settled.wait(), timeout)
        return self._snapshot()

    def __aiter__(self) -> LiveQuery:
        return self

    async def __anext__(self) -> QueryResult:
        self._seen, snap = await self._latest.next_after(self._seen)
        return snap

    async def next(self, timeout: float | None = None) -> QueryResult:
        """The next snapshot not yet seen by this handle's iterator."""
        self._seen, snap = await self._latest.next_after(self._seen, timeout)
        return snap

    def changes(self) -> Feed[QueryChange]:
        """A new async iterator over ENTER/UPDATE/LEAVE changes from now on."""
        feed: Feed[QueryChange] = Feed(self._feed_size, what=f"query on {self.spec.map_name!r}")
        self._feeds.append(feed)
        return feed

    def close(self) -> None:
        self._owner._drop(self)
        self._latest.close()
        for feed in self._feeds:
            feed.close()

    async def __aenter__(self) -> LiveQuery:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # --- updates ---

    def _emit(self, kind: str, key: str, value: Any) -> None:
        change = QueryChange(kind, key, value)
        for feed in list(self._feeds):
            if not feed.put(change):
                self._feeds.remove(feed)

    def _set_rows(self, rows: Mapping[str, Any], source: str) -> None:
        for key in [k for k in self._rows if k not in rows]:
            del self._rows[key]
            self._emit("LEAVE", key, None)
        for key, value in rows.items():
            old = self._rows.get(key, _ABSENT)
            self._rows[key] = value
            if old is _ABSENT:
                self._emit("ENTER", key, value)
            elif old != value:
                self._emit("UPDATE", key, value)
        self._source = source
        self._latest.bump()

    def _local_rows(self, replica: Any) -> dict[str, Any]:
        return dict(evaluate(self._query, replica.items()).results)

    def _on_resp(self, resp: proto.QueryResp, replica: Any, pending_keys: set[str]) -> None:
        rows = dict(resp.results)
        # The server has not seen this client's unacknowledged writes yet: overlay them.
        if replica is not None and pending_keys:
            for key in pending_keys:
                self._overlay(rows, key, replica.get(key))
            if self.spec.limit is not None and len(rows) > self.spec.limit:
                order = self._order
                ranked = sorted(rows.items(), key=lambda kv: order(kv[0], kv[1]))
                rows = dict(ranked[: self.spec.limit])
        self._has_more = resp.has_more
        self._next_cursor = resp.next_cursor
        self.error = resp.error
        self._set_rows(rows, "server")
        self.settled.set()

    def _on_update(self, upd: proto.QueryUpdate) -> None:
        key = upd.key
        if upd.change_type == "LEAVE":
            if key not in self._rows:
                return
            del self._rows[key]
            self._emit("LEAVE", key, None)
        else:
            self._rows[key] = upd.value
            self._emit(upd.change_type, key, upd.value)
        self._latest.bump()

    def _overlay(self, rows: dict[str, Any], key: str, value: Any) -> None:
        if value is not None and self._match(key, value):
            rows[key] = project(value, self.spec.fields)
        else:
            rows.pop(key, None)

    def _on_local_write(self, key: str, value: Any) -> None:
        old = self._rows.get(key, _ABSENT)
        if value is None or not self._match(key, value):
            if old is _ABSENT:
                return
            del self._rows[key]
            self._emit("LEAVE", key, None)
            self._latest.bump()
            return
        new = project(value, self.spec.fields)
        if old is not _ABSENT:
            if old != new:
                self._rows[key] = new
                self._emit("UPDATE", key, new)
                self._latest.bump()
            return
        self._rows[key] = new
        limit = self.spec.limit
        if limit is not None and len(self._rows) > limit:
            order = self._order
            rows = self._rows
            evicted = max(rows, key=lambda k: order(k, rows[k]))
            del rows[evicted]
            if evicted == key:
                return  # ranked outside the window: nothing visible changed
            self._emit("LEAVE", evicted, None)
        self._emit("ENTER", key, new)
        self._latest.bump()


_ABSENT = object()


class Queries:
    """All live queries of one client."""

    def __init__(
        self,
        sender: Sender,
        replica_of: LocalSource,
        pending_keys: Callable[[str], set[str]],
        *,
        feed_size: int = 10_000,
    ) -> None:
        self._sender = sender
        self._replica_of = replica_of
        self._pending_keys = pending_keys
        self._live: dict[str, LiveQuery] = {}
        self._by_map: dict[str, set[LiveQuery]] = {}
        self._feed_size = feed_size

    def open(self, spec: QuerySpec) -> LiveQuery:
        q = LiveQuery(self, spec, self._feed_size)
        self._live[q.id] = q
        self._by_map.setdefault(spec.map_name, set()).add(q)
        replica = self._replica_of(spec.map_name)
        if replica is not None:
            q._set_rows(q._local_rows(replica), "local")
        self._subscribe(q)
        return q

    def _subscribe(self, q: LiveQuery) -> None:
        self._sender.send_nowait(
            proto.query_sub(q.id, q.spec.map_name, q.spec.to_wire(), q.spec.fields)
        )

    def _drop(self, q: LiveQuery) -> None:
        if self._live.pop(q.id, None) is None:
            return
        group = self._by_map.get(q.spec.map_name)
        if group is not None:
            group.discard(q)
            if not group:
                del self._by_map[q.spec.map_name]
        self._sender.send_nowait(proto.query_unsub(q.id))

    def on_session_ready(self) -> None:
        for q in self._live.values():
            self._subscribe(q)

    def on_resp(self, resp: proto.QueryResp) -> None:
        q = self._live.get(resp.query_id)
        if q is None:
            return
        name = q.spec.map_name
        q._on_resp(resp, self._replica_of(name), self._pending_keys(name))

    def on_update(self, upd: proto.QueryUpdate) -> None:
        q = self._live.get(upd.query_id)
        if q is not None:
            q._on_update(upd)

    def watching(self, map_name: str) -> bool:
        """Whether any live query is open on ``map_name``."""
        return map_name in self._by_map

    def on_local_write(self, map_name: str, key: str, value: Any) -> None:
        for q in self._by_map.get(map_name, ()):
            q._on_local_write(key, value)

    def close(self) -> None:
        for q in list(self._live.values()):
            q._latest.close()
            for feed in q._feeds:
                feed.close()
        self._live.clear()
        self._by_map.clear()
