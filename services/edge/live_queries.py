"""Live queries and map events: QUERY_SUB -> QUERY_RESP, then QUERY_UPDATE and SERVER_EVENT from
the change feed (PROTOCOL.md 4.7, 6).

A subscription is registered before its snapshot is read: while the snapshot loads, changes to
the map are buffered; once it is in, the buffered changes are applied on top of it (skipping a
change the snapshot already holds a newer version of), so a write that lands during the scan
shows up in the snapshot or as an update. The window and its ENTER/UPDATE/LEAVE events come from
``libs.query.LiveQuery``.

The first answer comes from a snapshot source: the query_dag service when the edge knows it
(``pick_snapshot``); an edge started without it scans the storage nodes itself.

Every connection holding at least one subscription on a map also gets a ``SERVER_EVENT`` for
each change of that map, tombstones included; the connection that made the write gets neither
events nor updates for it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack

from libs.dag import TAG_COLUMN, VALUE_COLUMN
from libs.dag.client import QueryDagClient, QueryDagError
from libs.dag.results import batch_rows
from libs.query import LiveQuery, Query, QueryError, evaluate, parse_query
from libs.storage_client import OR_ADD, OR_REMOVE, PUT, REMOVE, StoredRecord
from libs.wire import BadFrame, encode
from services.edge.change_feed import FeedChange
from services.edge.dispatch import Message, payload_of, str_field

if TYPE_CHECKING:
    from services.edge.change_feed import ChangeFeeds
    from services.edge.edge import Edge
    from services.edge.session import Session

log = logging.getLogger(__name__)

Row = tuple[str, Any]
Stamp = tuple[int, int, str]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A query's first rows: ``rows`` in any order (all matching rows when ``complete``, else
    the first rows of the query order); ``stamps`` the timestamps of the keys it saw."""

    rows: list[Row]
    stamps: dict[str, Stamp] = field(default_factory=dict)
    or_map: bool = False
    complete: bool = True


SnapshotSource = Callable[[str, Query], Awaitable[Snapshot]]

MAX_BUFFERED_CHANGES = 100_000  # changes held while a snapshot loads; more and it is re-read
SNAPSHOT_ATTEMPTS = 3
MAX_QUERIES_PER_CONNECTION = 1024
_EVENT_TYPES: dict[int, str] = {
    PUT: "PUT",
    REMOVE: "REMOVE",
    OR_ADD: "OR_ADD",
    OR_REMOVE: "OR_REMOVE",
}


def unpack_value(value: bytes) -> Any:
    return msgpack.unpackb(value, raw=False, strict_map_key=False) if value else None


def server_event(map_name: str, c: FeedChange, value: Any) -> dict[str, Any]:
    """The SERVER_EVENT of one change; LWW removals carry their tombstone record."""
    ts = {"millis": c.millis, "counter": c.counter, "nodeId": c.node_id}
    body: dict[str, Any] = {
        "mapName": map_name,
        "eventType": _EVENT_TYPES.get(c.kind, "PUT"),
        "key": c.key,
    }
    if c.kind == PUT or c.kind == REMOVE:
        record: dict[str, Any] = {"value": value if c.kind == PUT else None, "timestamp": ts}
        if c.ttl_ms and c.kind == PUT:
            record["ttlMs"] = c.ttl_ms
        body["record"] = record
    elif c.kind == OR_ADD:
        rec: dict[str, Any] = {"value": value, "timestamp": ts, "tag": c.tag}
        if c.ttl_ms:
            rec["ttlMs"] = c.ttl_ms
        body["orRecord"] = rec
        body["orTag"] = c.tag
    else:
        body["orTag"] = c.tag
    return {"type": "SERVER_EVENT", "payload": body}


class Subscription:
    """One QUERY_SUB of one connection."""

    __slots__ = (
        "buffer",
        "live",
        "map_name",
        "or_map",
        "overflowed",
        "query",
        "query_id",
        "refilling",
        "session",
    )

    def __init__(self, session: Session, query_id: str, map_name: str, query: Query) -> None:
        self.session = session
        self.query_id = query_id
        self.map_name = map_name
        self.query = query
        self.live: LiveQuery | None = None  # None while the snapshot loads
        self.buffer: list[tuple[FeedChange, Any]] | None = []
        self.overflowed = False  # more changes arrived during the snapshot than could be held
        self.or_map = False
        self.refilling = False

    def on_change(self, c: FeedChange, value: Any) -> None:
        if self.buffer is not None:
            if len(self.buffer) < MAX_BUFFERED_CHANGES:
                self.buffer.append((c, value))
            else:
                self.overflowed = True
            return
        if self.or_map or c.kind in (OR_ADD, OR_REMOVE) or self.live is None:
            return
        updates = self.live.apply_change(c.key, value if c.kind == PUT else None)
        if updates and c.origin != self.session.origin:
            for u in updates:
                self.session.send_live(
                    encode({"type": "QUERY_UPDATE", "payload": u.to_payload(self.query_id)})
                )

    def start(self, snap: Snapshot) -> list[bytes]:
        """Build the window from the snapshot, apply what was buffered; the frames to send
        after QUERY_RESP."""
        self.or_map = snap.or_map
        buffered = self.buffer or []
        self.buffer = None
        if snap.or_map:
            return []
        self.live = LiveQuery(self.query, snap.rows, complete=snap.complete)
        stamps = snap.stamps
        known = dict(snap.rows) if buffered else {}
        frames: list[bytes] = []
        for c, value in buffered:
            if c.kind not in (PUT, REMOVE):
                continue
            seen = stamps.get(c.key)
            if seen is not None and seen >= (c.millis, c.counter, c.node_id):
                continue  # the snapshot already holds this version or a newer one
            if c.kind == PUT and c.key in known and known[c.key] == value:
                continue  # a change the snapshot already reflects
            for u in self.live.apply_change(c.key, value if c.kind == PUT else None):
                if c.origin != self.session.origin:
                    frames.append(
                        encode({"type": "QUERY_UPDATE", "payload": u.to_payload(self.query_id)})
                    )
        return frames


class LiveQueries:
    def __init__(self, edge: Edge, feeds: ChangeFeeds) -> None:
        self.edge = edge
        self.feeds = feeds
        self.by_map: dict[str, set[Subscription]] = {}
        self.map_sessions: dict[str, dict[Session, int]] = {}
        self.snapshot: SnapshotSource = self.pick_snapshot
        self.dag: QueryDagClient | None = (
            QueryDagClient(edge.config.query_dag, timeout=edge.config.rpc_timeout_s)
            if edge.config.query_dag
            else None
        )
        if self.dag is not None:
            edge.on_stop(self.dag.close)
        feeds.add_listener(self._on_changes)
        feeds.on_resume(self.resync)

    # -- snapshots --

    async def pick_snapshot(self, map_name: str, query: Query) -> Snapshot:
        """With query_dag running, every first answer comes from a DAG: a sorted, bounded query
        as a top-N DAG (pushed down to the storage nodes), anything else — GROUP BY included —
        as a DAG streaming the matching rows (the filter runs on the nodes' columns), from which
        the live window (and its groups) is built here. An edge started without query_dag, or a
        DAG failure, scans the storage nodes instead."""
        if self.dag is not None:
            try:
                if query.limit is not None and query.sort and not query.group_by:
                    return await self.dag_snapshot(map_name, query)
                return await self.dag_rows_snapshot(map_name, query)
            except QueryDagError as e:
                log.warning("DAG snapshot of %s failed, scanning instead: %s", map_name, e)
        return await self.scan_snapshot(map_name, query)

    async def dag_rows_snapshot(self, map_name: str, query: Query) -> Snapshot:
        """Every row that passes the query's filter, whole values, through a query_dag job."""
        assert self.dag is not None
        job: dict[str, Any] = {}
        if query.predicate is not None:
            job["predicate"] = query.predicate
        elif query.where:
            job["where"] = query.where
        job["fields"] = [VALUE_COLUMN, TAG_COLUMN]  # whole values, and OR tags to tell OR maps
        rows: list[Row] = []
        or_values: dict[str, list[Any]] = {}
        async for batch in self.dag.run_job(map_name, job):
            tags = batch.column(TAG_COLUMN).to_objects()
            for (key, value), tag in zip(batch_rows(batch, "rows"), tags, strict=True):
                if isinstance(tag, str) and tag:
                    or_values.setdefault(key, []).append(value)
                else:
                    rows.append((key, value))
        if or_values and not rows:
            return Snapshot(list(or_values.items()), or_map=True)
        return Snapshot(rows)

    async def dag_snapshot(self, map_name: str, query: Query) -> Snapshot:
        """The window plus as many reserve rows, in query order, whole values (the live window
        needs the sort fields; projection happens on the way out)."""
        assert self.dag is not None and query.limit is not None
        spec: dict[str, Any] = {"sort": query.sort.to_wire()}
        if query.predicate is not None:
            spec["predicate"] = query.predicate
        elif query.where:
            spec["where"] = query.where
        spec["limit"] = query.limit * 2
        if query.cursor is not None:
            spec["cursor"] = query.cursor
        result = await self.dag.query(map_name, spec)
        return Snapshot(list(result.results), complete=not result.has_more)

    async def scan_snapshot(self, map_name: str, query: Query) -> Snapshot:
        """Every live record of the map that passes the query's filter, from every owner (the
        router retries on the new owners when the table moves under the scan)."""
        kw: dict[str, Any] = {}
        if query.predicate is not None:
            kw["predicate"] = query.predicate
        elif query.where:
            kw["where"] = query.where
        return rows_of(await self.edge.router.scan_all(map_name, **kw))

    # -- handlers --

    async def on_query_sub(self, session: Session, msg: Message) -> None:
        body = payload_of(msg)
        query_id = str_field(body, "queryId", "QUERY_SUB")
        map_name = str_field(body, "mapName", "QUERY_SUB")
        fields = body.get("fields")
        if fields is not None and (
            type(fields) is not list or not all(type(f) is str for f in fields)
        ):
            raise BadFrame("QUERY_SUB: 'fields' must be an array of field names")
        self._unsubscribe(session, query_id)
        try:
            query = parse_query(body.get("query"), fields, principal=session.principal.as_context())
        except QueryError as e:
            await session.send(
                {
                    "type": "QUERY_RESP",
                    "payload": {
                        "queryId": query_id,
                        "results": [],
                        "error": str(e),
                        "code": "INVALID_QUERY",
                    },
                }
            )
            return
        if len(self._subs_of(session)) >= MAX_QUERIES_PER_CONNECTION:
            await session.send(
                {
                    "type": "QUERY_RESP",
                    "payload": {
                        "queryId": query_id,
                        "results": [],
                        "error": f"at most {MAX_QUERIES_PER_CONNECTION} live queries per connection",
                        "code": "TOO_MANY_QUERIES",
                    },
                }
            )
            return
        await session.writes_settled()
        sub = Subscription(session, query_id, map_name, query)
        self._register(sub)
        for _ in range(SNAPSHOT_ATTEMPTS):
            try:
                snap = await self.snapshot(map_name, query)
            except Exception:
                self._unsubscribe(session, query_id)
                raise
            if sub.buffer is None:  # replaced or unsubscribed while loading
                return
            if not sub.overflowed:
                break
            sub.buffer, sub.overflowed = [], False  # too many writes during the read: read again
        else:
            self._unsubscribe(session, query_id)
            await session.send(
                {
                    "type": "QUERY_RESP",
                    "payload": {
                        "queryId": query_id,
                        "results": [],
                        "error": "too many concurrent writes during the snapshot; resubscribe",
                        "code": "QUERY_SNAPSHOT_OVERFLOW",
                    },
                }
            )
            return
        if snap.or_map:
            payload = {
                "queryId": query_id,
                "results": [{"key": k, "value": v} for k, v in snap.rows],
                "hasMore": False,
                "cursorStatus": "none",
            }
        else:
            payload = evaluate(query, snap.rows).to_payload(query_id)
        updates = sub.start(snap)
        await session.send({"type": "QUERY_RESP", "payload": payload})
        for f in updates:
            session.send_live(f)

    async def on_query_unsub(self, session: Session, msg: Message) -> None:
        query_id = str_field(payload_of(msg), "queryId", "QUERY_UNSUB")
        self._unsubscribe(session, query_id)

    # -- registry --

    def _subs_of(self, session: Session) -> dict[str, Subscription]:
        subs: dict[str, Subscription] | None = session.state.get("queries")
        if subs is None:
            subs = session.state["queries"] = {}
            session.on_close(lambda: self._drop_session(session))
        return subs

    def _register(self, sub: Subscription) -> None:
        self._subs_of(sub.session)[sub.query_id] = sub
        self.by_map.setdefault(sub.map_name, set()).add(sub)
        counts = self.map_sessions.setdefault(sub.map_name, {})
        counts[sub.session] = counts.get(sub.session, 0) + 1
        self.feeds.watch(sub.map_name)
        self.edge.metrics.live_queries.inc()

    def _unsubscribe(self, session: Session, query_id: str) -> None:
        subs: dict[str, Subscription] | None = session.state.get("queries")
        sub = subs.pop(query_id, None) if subs else None
        if sub is None:
            return
        sub.buffer = None
        sub.live = None
        sub.or_map = True  # inert from now on
        group = self.by_map.get(sub.map_name)
        if group is not None:
            group.discard(sub)
            if not group:
                del self.by_map[sub.map_name]
        counts = self.map_sessions.get(sub.map_name)
        if counts is not None:
            n = counts.get(session, 0) - 1
            if n > 0:
                counts[session] = n
            else:
                counts.pop(session, None)
                if not counts:
                    del self.map_sessions[sub.map_name]
        self.feeds.unwatch(sub.map_name)
        self.edge.metrics.live_queries.dec()

    def _drop_session(self, session: Session) -> None:
        for query_id in list(session.state.get("queries", {})):
            self._unsubscribe(session, query_id)

    # -- changes --

    def _on_changes(self, map_name: str, changes: list[FeedChange]) -> None:
        subs = self.by_map.get(map_name)
        sessions = self.map_sessions.get(map_name)
        if not subs and not sessions:
            return
        for c in changes:
            value = unpack_value(c.value) if c.kind in (PUT, OR_ADD) else None
            if sessions:
                frame = encode(server_event(map_name, c, value))
                for s in list(sessions):
                    if s.origin != c.origin:
                        s.send_live(frame)
            if subs:
                for sub in list(subs):
                    sub.on_change(c, value)
                    if sub.live is not None and sub.live.needs_refill and not sub.refilling:
                        sub.refilling = True
                        self.edge.spawn(self._refill(sub), name=f"refill-{sub.query_id}")

    def resync(self) -> None:
        """Re-read every live query after the change feed missed changes (a storage stream was
        dropped and resumed): each window moves to the current rows with the events that get a
        client there."""
        for subs in list(self.by_map.values()):
            for sub in list(subs):
                if sub.live is not None and not sub.refilling:
                    sub.refilling = True
                    self.edge.spawn(self._refill(sub), name=f"resync-{sub.query_id}")

    async def _refill(self, sub: Subscription) -> None:
        """Re-run a bounded query whose reserve ran dry and move the client to the new window."""
        try:
            snap = await self.snapshot(sub.map_name, sub.query)
            if sub.live is None:
                return
            for u in sub.live.refill(snap.rows, complete=snap.complete):
                sub.session.send_live(
                    encode({"type": "QUERY_UPDATE", "payload": u.to_payload(sub.query_id)})
                )
        except Exception as e:
            log.warning("refill of query %s failed: %s", sub.query_id, e)
        finally:
            sub.refilling = False


def rows_of(records: list[StoredRecord]) -> Snapshot:
    """(key, value) rows from stored records; OR maps give each key the list of its values."""
    stamps: dict[str, Stamp] = {}
    rows: list[Row] = []
    or_values: dict[str, list[Any]] = {}
    for r in records:
        if r.kind == PUT:
            rows.append((r.key, unpack_value(r.value)))
            stamps[r.key] = (r.millis, r.counter, r.node_id)
        elif r.kind == OR_ADD:
            or_values.setdefault(r.key, []).append(unpack_value(r.value))
        elif r.kind == REMOVE:
            stamps[r.key] = (r.millis, r.counter, r.node_id)
    if or_values and not rows:
        return Snapshot(list(or_values.items()), stamps, or_map=True)
    return Snapshot(rows, stamps)


def install(edge: Edge) -> None:
    lq = LiveQueries(edge, edge.features["change_feed"])
    edge.features["live_queries"] = lq
    edge.dispatcher.add("QUERY_SUB", lq.on_query_sub)
    edge.dispatcher.add("QUERY_UNSUB", lq.on_query_unsub)
