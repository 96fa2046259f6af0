"""``TopGunClient``: an offline-first replica of TopGun maps, kept in sync over one WebSocket.

The client ties the pieces together. Writes go to the local replica and the op log at once
(:mod:`._maps`, :mod:`._oplog`); the op log is sent as ``OP_BATCH`` frames in the background,
at most ``max_inflight_ops`` unacknowledged at a time, and every unacknowledged op is sent again
on each new session (the server applies them idempotently). Each session then walks the Merkle
tree of every open map (:mod:`._sync`), re-subscribes live queries, topics, counters and live
searches, and reports ``READY`` once the walks are done.

Everything runs on the event loop that opened the client; for threads and scripts see
:func:`topgun.connect`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from libs.client import _protocol as proto
from libs.client._connection import (
    Connection,
    ConnectionOptions,
    NotConnected,
    Status,
    TokenProvider,
)
from libs.client._counters import Counter, Counters
from libs.client._maps import LwwMapHandle, OrMapHandle, WriteOp
from libs.client._oplog import LocalStore
from libs.client._outbox import Outbox
from libs.client._queries import LiveQuery, Queries, QueryResult, QuerySpec
from libs.client._search import LiveSearch, Searches, SearchHit, search_options
from libs.client._sync import MerkleSync
from libs.client._topics import Subscription, Topics
from libs.crdt import HLC, Timestamp

log = logging.getLogger("topgun.client")

__all__ = ["ClientOptions", "TopGunClient", "WriteConcern"]

StatusCallback = Callable[[Status], None]

_REPLICA_COMMIT_DELAY = 0.05
_REPLICA_QUERY = "replica:"
_MATCH_NOTHING = {"predicate": {"op": "or", "children": []}}


class WriteConcern:
    """The acknowledgement levels a write can ask for (``OP_BATCH.writeConcern``)."""

    FIRE_AND_FORGET = "FIRE_AND_FORGET"
    MEMORY = "MEMORY"
    APPLIED = "APPLIED"
    REPLICATED = "REPLICATED"
    PERSISTED = "PERSISTED"


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Tuning knobs; the defaults suit an application talking to one edge."""

    connection: ConnectionOptions = field(default_factory=ConnectionOptions)
    max_batch_ops: int = 1000
    """Ops per ``OP_BATCH`` frame."""
    max_inflight_ops: int = 10_000
    """Ops sent but not yet acknowledged; more wait (the server's rate limit is 20,000 ops/s)."""
    rate_limit_retry: float = 1.0
    """Seconds before re-sending unacknowledged ops after an ``ERROR`` 429 or 5xx; doubled
    for each further error before an ack, up to ``retry_max``."""
    retry_max: float = 30.0
    sync_stall_timeout: float = 30.0
    feed_size: int = 10_000
    """How far a subscription's consumer may fall behind before the subscription is closed."""


class TopGunClient:
    """A TopGun client. ``async with TopGunClient(url) as client:`` opens and closes it.

    ``store`` is a SQLite file holding the op log and the replicas (offline writes survive a
    restart), or ``":memory:"``. ``token`` is a JWT; ``token_provider`` a function (sync or
    async) called for a fresh one on each connect after a failure.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        token_provider: TokenProvider | None = None,
        store: str | Path = ":memory:",
        write_concern: str | None = None,
        on_status: StatusCallback | None = None,
        options: ClientOptions | None = None,
    ) -> None:
        self.url = url
        self.options = options or ClientOptions()
        self.write_concern = write_concern
        self._token = token
        self._token_provider = token_provider
        self._store_path = store
        self._status_callbacks: list[StatusCallback] = [on_status] if on_status else []
        self._status_events: dict[Status, asyncio.Event] = {}
        self._maps: dict[str, LwwMapHandle | OrMapHandle] = {}
        self._opened = False
        self._closed = False
        self._tick_scheduled = False
        self._commit_handle: asyncio.TimerHandle | None = None
        self._partition_waiters: list[asyncio.Future[proto.PartitionMap]] = []
        self.partition_table: proto.PartitionMap | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> TopGunClient:
        """Load the local store and start connecting (in the background). Idempotent."""
        if self._opened:
            return self
        self._opened = True
        self.store = LocalStore(self._store_path)
        self.node_id = self.store.node_id()
        self.hlc = HLC(self.node_id)
        saved = self.store.get_meta("hlc")
        if isinstance(saved, list) and len(saved) == 2:
            self.hlc.update(Timestamp(int(saved[0]), int(saved[1]), self.node_id))
        self.conn = Connection(
            self.url,
            self,
            token=self._token,
            token_provider=self._token_provider,
            device_token=self.store.get_meta("device_token"),
            options=self.options.connection,
        )
        opts = self.options
        self.outbox = Outbox(
            self.store,
            self.conn,
            max_batch=opts.max_batch_ops,
            max_inflight=opts.max_inflight_ops,
            retry_base=opts.rate_limit_retry,
            retry_max=opts.retry_max,
        )
        self.topics = Topics(self.conn, feed_size=self.options.feed_size)
        self.searches = Searches(self.conn, feed_size=self.options.feed_size)
        self.queries = Queries(
            self.conn, self._maps.get, self.outbox.keys_of, feed_size=self.options.feed_size
        )
        self.counters = Counters(self.conn, self.store, self.node_id)
        self.sync = MerkleSync(
            self.conn,
            last_sync=lambda name: int(self.store.get_meta(f"sync:{name}", 0)),
            save_last_sync=lambda name, ms: self.store.set_meta(f"sync:{name}", int(ms)),
            on_reset=self._reset_map,
            on_done=self._sync_done,
            has_pending=lambda name: bool(self.outbox.keys_of(name)),
            stall_timeout=self.options.sync_stall_timeout,
        )
        self.conn.start()
        return self

    async def close(self) -> None:
        """Stop syncing, end every subscription and close the store (pending writes are kept)."""
        if self._closed or not self._opened:
            self._closed = True
            return
        self._closed = True
        await self.conn.close()
        if self._commit_handle is not None:
            self._commit_handle.cancel()
        self.topics.close()
        self.searches.close()
        self.queries.close()
        self.counters.close()
        self.outbox.close()
        for pfut in self._partition_waiters:
            if not pfut.done():
                pfut.set_exception(NotConnected("the client was closed"))
        self._save_hlc()
        self.store.close()

    async def __aenter__(self) -> TopGunClient:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- status ---------------------------------------------------------------------------------

    @property
    def status(self) -> Status:
        return self.conn.status if self._opened else Status.OFFLINE

    def on_status_change(self, callback: StatusCallback) -> Callable[[], None]:
        """Call ``callback(status)`` on every change; returns a function that unregisters it."""
        self._status_callbacks.append(callback)
        return lambda: self._status_callbacks.remove(callback)

    async def wait_for_status(self, status: Status, timeout: float | None = 30.0) -> None:
        if self.status is status:
            return
        ev = self._status_events.setdefault(status, asyncio.Event())
        ev.clear()
        await asyncio.wait_for(ev.wait(), timeout)

    async def wait_ready(self, timeout: float | None = 30.0) -> None:
        """Wait until the client is connected, authenticated and its open maps are synced."""
        await self.wait_for_status(Status.READY, timeout)

    def set_token(self, token: str | None) -> None:
        """Authenticate with a new token (a parked or failed session retries with it at once)."""
        self.conn.set_token(token)

    @property
    def user_id(self) -> str | None:
        return self.conn.user_id

    # --- maps -----------------------------------------------------------------------------------

    def lww_map(self, name: str) -> LwwMapHandle:
        """The last-writer-wins map ``name``, opened (and synced) on first use."""
        return self._open_map(name, LwwMapHandle)  # type: ignore[return-value]

    def or_map(self, name: str) -> OrMapHandle:
        """The observed-remove map ``name``, opened (and synced) on first use."""
        return self._open_map(name, OrMapHandle)  # type: ignore[return-value]

    def _open_map(self, name: str, kind: type) -> LwwMapHandle | OrMapHandle:
        self._check_open()
        handle = self._maps.get(name)
        if handle is not None:
            if not isinstance(handle, kind):
                raise TypeError(f"map {name!r} is already open as a {handle.kind} map")
            return handle
        handle = kind(self, name)
        handle._write_concern = self.write_concern
        self._maps[name] = handle
        if self.conn.ready:
            if self.status is Status.READY:
                self.conn.set_status(Status.SYNCING)
            self._watch_map(name)
            self.sync.start(handle)
        return handle

    def _watch_map(self, name: str) -> None:
        """Subscribe to the map's changes without asking for any rows: the server sends
        ``SERVER_EVENT``s to connections holding a query on the map, and a predicate that
        matches nothing (an empty ``or``) makes that query cost nothing else."""
        self.conn.send_nowait(proto.query_sub(_REPLICA_QUERY + name, name, _MATCH_NOTHING))

    def _check_open(self) -> None:
        if not self._opened:
            raise RuntimeError("the client is not open: use `async with TopGunClient(...)`")
        if self._closed:
            raise RuntimeError("the client is closed")

    async def wait_synced(self, name: str, timeout: float | None = 30.0) -> None:
        """Wait until the open map ``name`` finished a Merkle sync on the current session."""
        await asyncio.wait_for(self.sync.synced_event(name).wait(), timeout)

    # --- the op log (the Engine interface of the map handles) -------------------------------

    def record_op(self, body: dict[str, Any], record_blob: bytes | None = None) -> WriteOp:
        if self._closed:
            raise RuntimeError("the client is closed")
        op = self.outbox.append(body, record_blob)
        self._schedule_tick()
        return op

    def last_op_of(self, map_name: str) -> int:
        """The id of the last write to ``map_name`` in this process (0 if none)."""
        return self.outbox.last_op_of(map_name)

    @property
    def pending_ops(self) -> int:
        """Writes not yet acknowledged by the server."""
        return len(self.outbox)

    def local_change(self, map_name: str, key: str) -> None:
        if not self.queries.watching(map_name):
            return
        handle = self._maps.get(map_name)
        if handle is not None:
            value = handle.get(key)
            self.queries.on_local_write(map_name, key, value if value != [] else None)

    def remote_change(self, map_name: str, key: str) -> None:
        self._schedule_tick()

    async def wait_acked(self, op: WriteOp | int, timeout: float | None = 30.0) -> str:
        """Wait for the server's ``OP_ACK`` covering ``op``; returns the achieved write level.

        Raises ``TimeoutError`` after ``timeout`` seconds and :class:`WriteRejected` if the server
        refused the write.
        """
        return await self.outbox.wait_acked(op.id if isinstance(op, WriteOp) else int(op), timeout)

    async def flush(self, timeout: float | None = 30.0) -> None:
        """Wait until every write made so far is acknowledged."""
        if len(self.outbox):
            await self.outbox.wait_acked(self.outbox.last_op, timeout)

    def _schedule_tick(self) -> None:
        if not self._tick_scheduled and not self._closed:
            self._tick_scheduled = True
            asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        """Once per loop turn after a change: commit the store, send what can be sent.

        New ops are committed at once (an offline write must survive a crash); changes that
        only came from the server are committed at most every ``_REPLICA_COMMIT_DELAY``
        seconds, since they can always be synced again.
        """
        self._tick_scheduled = False
        if self._closed:
            return
        if self.store.has_new_ops:
            self._commit()
        elif self.store.dirty and self._commit_handle is None:
            self._commit_handle = asyncio.get_running_loop().call_later(
                _REPLICA_COMMIT_DELAY, self._commit
            )
        self.outbox.send()

    def _commit(self) -> None:
        if self._commit_handle is not None:
            self._commit_handle.cancel()
            self._commit_handle = None
        if self._closed:
            return
        try:
            self._save_hlc()
            self.store.commit()
        except Exception:
            log.exception("could not commit the local store")

    def _save_hlc(self) -> None:
        st = self.hlc.state
        self.store.set_meta("hlc", [st.last_millis, st.last_counter])

    # --- session handling (the SessionHandler interface of the connection) --------------------

    def on_status(self, status: Status) -> None:
        ev = self._status_events.get(status)
        if ev is not None:
            ev.set()
        for cb in list(self._status_callbacks):
            try:
                cb(status)
            except Exception:
                log.exception("status callback failed")

    def on_session_ready(self) -> None:
        self.conn.set_status(Status.SYNCING)
        if self.conn.device_token and self.conn.device_token != self.store.get_meta("device_token"):
            self.store.set_meta("device_token", self.conn.device_token)
        self.outbox.session_ready()
        self.topics.on_session_ready()
        self.counters.on_session_ready()
        self.queries.on_session_ready()
        self.searches.on_session_ready()
        for name, handle in self._maps.items():
            self._watch_map(name)
            self.sync.start(handle)
        if not self.sync.busy:
            self._sync_done()

    def _sync_done(self) -> None:
        if self.conn.ready:
            self.conn.set_status(Status.READY)

    def on_session_lost(self) -> None:
        self.outbox.session_lost()
        self.sync.session_lost()
        self.searches.on_session_lost()
        for fut in self._partition_waiters:
            if not fut.done():
                fut.set_exception(NotConnected("the connection dropped before the answer"))
        self._partition_waiters.clear()

    def on_message(self, msg: proto.ServerMessage) -> None:
        handler = _HANDLERS.get(type(msg))
        if handler is None:
            log.debug("ignoring %s", type(msg).__name__)
            return
        handler(self, msg)
        if self.store.dirty:
            self._schedule_tick()

    def _on_op_ack(self, msg: proto.OpAck) -> None:
        self.outbox.on_ack(msg)
        self._schedule_tick()

    def _on_op_rejected(self, msg: proto.OpRejected) -> None:
        if msg.op_id.isdigit():
            self.outbox.reject(int(msg.op_id), msg.reason)

    def _on_server_event(self, ev: proto.ServerEvent) -> None:
        handle = self._maps.get(ev.map_name)
        if handle is None:
            return
        if isinstance(handle, LwwMapHandle):
            if ev.event_type in ("PUT", "REMOVE") and ev.record is not None:
                handle.merge_wire(ev.key, ev.record)
        elif ev.event_type == "OR_ADD" and ev.or_record is not None:
            handle.apply_add(ev.key, ev.or_record)
        elif ev.event_type == "OR_REMOVE" and ev.or_tag is not None:
            handle.apply_remove(ev.or_tag, ev.key)

    def _on_error(self, msg: proto.ErrorMessage) -> None:
        log.warning("server error %s: %s", msg.code, msg.message)
        self.outbox.on_error(msg.code or 0)

    def _on_partition_map(self, msg: proto.PartitionMap) -> None:
        self.partition_table = msg
        for fut in self._partition_waiters:
            if not fut.done():
                fut.set_result(msg)
        self._partition_waiters.clear()

    def _on_gc_prune(self, msg: proto.GcPrune) -> None:
        older = Timestamp.from_wire(msg.older_than)
        for handle in self._maps.values():
            handle.crdt.prune(older)

    def _reset_map(self, handle: LwwMapHandle | OrMapHandle) -> None:
        handle.clear()
        self.store.clear_map(handle.name)
        for body in self.outbox.bodies(handle.name):
            handle.reapply(body)

    # --- queries ----------------------------------------------------------------------------------

    def query(
        self,
        map_name: str,
        *,
        where: Mapping[str, Any] | None = None,
        predicate: Mapping[str, Any] | None = None,
        sort: Any = None,
        limit: int | None = None,
        fields: Sequence[str] | None = None,
    ) -> LiveQuery:
        """A live query. ``sort`` is ``{"field": "asc"|"desc"}``, ``[("field", "desc")]`` or
        ``"field:desc,other"``; ``predicate`` a TopGun predicate tree, ``where`` field equalities."""
        self._check_open()
        spec = QuerySpec.build(
            map_name, where=where, predicate=predicate, sort=sort, limit=limit, fields=fields
        )
        return self.queries.open(spec)

    async def query_once(
        self,
        map_name: str,
        *,
        where: Mapping[str, Any] | None = None,
        predicate: Mapping[str, Any] | None = None,
        sort: Any = None,
        limit: int | None = None,
        fields: Sequence[str] | None = None,
        timeout: float = 10.0,
    ) -> QueryResult:
        """The server's answer to a query (waits up to ``timeout`` seconds for a connection)."""
        q = self.query(
            map_name, where=where, predicate=predicate, sort=sort, limit=limit, fields=fields
        )
        try:
            return await q.ready(timeout)
        finally:
            q.close()

    # --- topics, counters, search, partitions -------------------------------------------------

    async def publish(self, topic: str, data: Any) -> None:
        """Publish ``data`` on ``topic`` (queued while offline)."""
        self._check_open()
        await self.topics.publish(topic, data)

    def subscribe(self, topic: str) -> Subscription:
        """Messages published on ``topic`` by others, as an async iterator."""
        self._check_open()
        return self.topics.subscribe(topic)

    def counter(self, name: str) -> Counter:
        """The PN counter ``name``."""
        self._check_open()
        return self.counters.get(name)

    async def search(
        self,
        map_name: str,
        query: str,
        *,
        limit: int | None = None,
        min_score: float | None = None,
        boost: Mapping[str, float] | None = None,
        timeout: float = 10.0,
    ) -> list[SearchHit]:
        """Full-text search on the server, best hits first."""
        self._check_open()
        opts = search_options(limit, min_score, boost)
        resp = await self.searches.search(map_name, query, opts, timeout)
        if resp.error:
            raise RuntimeError(f"search failed: {resp.error}")
        return list(resp.results)

    def search_subscribe(
        self,
        map_name: str,
        query: str,
        *,
        limit: int | None = None,
        min_score: float | None = None,
        boost: Mapping[str, float] | None = None,
    ) -> LiveSearch:
        """A live search: hits kept current by the server."""
        self._check_open()
        return self.searches.subscribe(map_name, query, search_options(limit, min_score, boost))

    async def partition_map(self, timeout: float = 10.0) -> proto.PartitionMap:
        """Ask the server for its partition map (which node owns which of the 271 partitions)."""
        self._check_open()
        fut: asyncio.Future[proto.PartitionMap] = asyncio.get_running_loop().create_future()
        self._partition_waiters.append(fut)
        if not await self.conn.send(proto.partition_map_request(0)):
            self._partition_waiters.remove(fut)
            raise NotConnected("the partition map needs a connection to the server")
        return await asyncio.wait_for(fut, timeout)


_HANDLERS: dict[type, Callable[[TopGunClient, Any], None]] = {
    proto.OpAck: TopGunClient._on_op_ack,
    proto.OpRejected: TopGunClient._on_op_rejected,
    proto.ServerEvent: TopGunClient._on_server_event,
    proto.SyncRespRoot: lambda c, m: c.sync.on_root(m),
    proto.SyncRespBuckets: lambda c, m: c.sync.on_buckets(m),
    proto.SyncRespLeaf: lambda c, m: c.sync.on_leaf(m),
    proto.SyncResetRequired: lambda c, m: c.sync.on_reset(m),
    proto.OrSyncRespRoot: lambda c, m: c.sync.on_or_root(m),
    proto.OrSyncRespBuckets: lambda c, m: c.sync.on_buckets(m),
    proto.OrSyncRespLeaf: lambda c, m: c.sync.on_or_leaf(m),
    proto.QueryResp: lambda c, m: c.queries.on_resp(m),
    proto.QueryUpdate: lambda c, m: c.queries.on_update(m),
    proto.TopicMessage: lambda c, m: c.topics.on_message(m),
    proto.SearchResp: lambda c, m: c.searches.on_resp(m),
    proto.SearchUpdate: lambda c, m: c.searches.on_update(m),
    proto.CounterState: lambda c, m: c.counters.on_state(m),
    proto.PartitionMap: TopGunClient._on_partition_map,
    proto.ErrorMessage: TopGunClient._on_error,
    proto.GcPrune: TopGunClient._on_gc_prune,
}
