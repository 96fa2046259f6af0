"""The gRPC surface of the search service, and its process lifecycle: follow the storage feeds,
index, serve until SIGTERM, then stop accepting calls, commit what is pending and exit."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs.runtime import announce_port, freeze_heap, log_config
from libs.storage_client import CHANNEL_OPTIONS, StorageClient
from services.search.catalog import IndexCatalog
from services.search.config import SearchConfig
from services.search.feed import FeedFollower, StorageScanner, unindexed_maps
from services.search.index import Hit, MapIndex
from services.search.indexer import Indexer
from services.search.live import ChangeType, LiveSearches, SearchUpdate
from services.search.plan import InvalidQuery, QueryPlan, SearchOptions, build_plan
from services.search.query import Node, QuerySyntaxError, parse_query
from services.search.state import FileStateStore, MemoryStateStore, StateStore
from services.search.subscribers import Subscribers
from topgun_rpc import search_pb2, search_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "topgun.rpc.Search"
SHUTDOWN_GRACE_S = 2.0
FLUSH_TIMEOUT_S = 15.0

_CHANGE = {
    ChangeType.ENTER: search_pb2.ENTER,
    ChangeType.UPDATE: search_pb2.UPDATE,
    ChangeType.LEAVE: search_pb2.LEAVE,
}


_PLAIN_OPTIONS = {flag: SearchOptions(limit=0, include_value=flag) for flag in (False, True)}


def options_from_pb(o: search_pb2.SearchOptions) -> SearchOptions:
    if not o.limit and not o.min_score and not o.boost and not o.fields:
        return _PLAIN_OPTIONS[o.include_value]
    return SearchOptions(
        limit=o.limit,
        min_score=o.min_score,
        boost=dict(o.boost),
        fields=tuple(o.fields),
        include_value=o.include_value,
    )


def _hit_pb(h: Hit) -> search_pb2.SearchHit:
    return search_pb2.SearchHit(
        key=h.key, score=h.score, matched_terms=h.matched_terms, value=h.value or b""
    )


def _update_pb(u: SearchUpdate) -> search_pb2.SearchUpdate:
    return search_pb2.SearchUpdate(
        subscription_id=u.subscription_id,
        key=u.key,
        change_type=_CHANGE[u.change],
        score=u.score,
        matched_terms=u.matched_terms,
        value=u.value or b"",
    )


class Rejected(ValueError):
    """A request the service cannot run as asked: malformed query, bad options, unknown field."""


class SearchServicer(search_pb2_grpc.SearchServicer):
    def __init__(
        self,
        catalog: IndexCatalog,
        indexer: Indexer,
        live: LiveSearches,
        subscribers: Subscribers,
        follower: FeedFollower | None = None,
    ) -> None:
        self.catalog = catalog
        self.indexer = indexer
        self.live = live
        self.subscribers = subscribers
        self.follower = follower

    def _prepare(
        self, map_name: str, query: str, o: search_pb2.SearchOptions, *, create: bool
    ) -> tuple[Node, SearchOptions, QueryPlan | None, MapIndex | None]:
        """Parse and plan a request; the plan is None when the map has no index (no results).
        Raises ``Rejected`` for a malformed query or options."""
        try:
            options = options_from_pb(o)
            node = parse_query(query)
        except QuerySyntaxError as e:
            raise Rejected(f"malformed query: {e}") from None
        except InvalidQuery as e:
            raise Rejected(str(e)) from None
        idx = self.catalog.open(map_name) if create else self.catalog.get(map_name)
        if idx is None:
            return node, options, None, None
        try:
            return node, options, build_plan(node, idx.schema, idx.field_targets, options), idx
        except InvalidQuery as e:
            raise Rejected(str(e)) from None

    def _search(self, request: search_pb2.SearchRequest) -> search_pb2.SearchResponse:
        _, options, plan, idx = self._prepare(
            request.map_name, request.query, request.options, create=False
        )
        if plan is None or idx is None:
            return search_pb2.SearchResponse(request_id=request.request_id)
        resp = search_pb2.SearchResponse(request_id=request.request_id)
        add = resp.hits.add  # built in place: a list of SearchHit would be copied once more
        for h in idx.search(plan, options):
            add(key=h.key, score=h.score, matched_terms=h.matched_terms, value=h.value or b"")
        return resp

    async def Search(self, request: Any, context: Any) -> search_pb2.SearchResponse:
        try:
            return self._search(request)
        except Rejected as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            raise

    async def SearchStream(
        self, request_iterator: AsyncIterator[search_pb2.SearchRequest], context: Any
    ) -> AsyncIterator[search_pb2.SearchResponse]:
        async for request in request_iterator:
            try:
                yield self._search(request)
            except Rejected as e:
                yield search_pb2.SearchResponse(request_id=request.request_id, error=str(e))

    async def Subscribe(self, request: Any, context: Any) -> search_pb2.SearchResponse:
        if request.subscriber not in self.subscribers:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"subscriber {request.subscriber!r} has no Updates stream open; open it first",
            )
        try:
            node, options, plan, idx = self._prepare(
                request.map_name, request.query, request.options, create=True
            )
        except Rejected as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            raise
        hits = idx.search(plan, options) if plan is not None and idx is not None else []
        # no await between the search and the registration: no commit can fall in between
        self.live.add(
            request.subscriber,
            request.subscription_id,
            request.map_name,
            node,
            options,
            idx.schema if idx is not None else None,
            hits,
        )
        return search_pb2.SearchResponse(hits=[_hit_pb(h) for h in hits])

    async def Unsubscribe(self, request: Any, context: Any) -> search_pb2.UnsubscribeResponse:
        removed = self.live.remove(request.subscriber, request.subscription_id)
        return search_pb2.UnsubscribeResponse(removed=removed)

    async def Updates(self, request: Any, context: Any) -> AsyncIterator[search_pb2.UpdateBatch]:
        stream = self.subscribers.open(request.subscriber)
        try:
            yield search_pb2.UpdateBatch()
            while True:
                batch = await stream.queue.get()
                if stream.dropped:
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"subscriber {request.subscriber!r} fell behind; subscribe again",
                    )
                if batch is None or stream.replaced:
                    return
                yield search_pb2.UpdateBatch(updates=[_update_pb(u) for u in batch])
        finally:
            self.subscribers.close(stream)

    async def Status(self, request: Any, context: Any) -> search_pb2.StatusResponse:
        f = self.follower
        return search_pb2.StatusResponse(
            positions=self.indexer.committed_positions,
            maps=[search_pb2.MapStatus(name=i.name, documents=i.num_docs) for i in self.catalog],
            commits=self.indexer.commits,
            applied_changes=self.indexer.applied_changes,
            feeds=len(f.clients) if f else 0,
            feeds_caught_up=len(f.caught_up) if f else 0,
            subscriptions=len(self.live),
            rebuilds_pending=len(self.indexer.rebuild_queue),
            rebuilds_done=self.indexer.rebuilds_done,
        )

    async def Rebuild(self, request: Any, context: Any) -> search_pb2.RebuildResponse:
        if self.catalog.maps.spec_for(request.map_name) is None:
            return search_pb2.RebuildResponse(searchable=False)
        self.indexer.request_rebuild(request.map_name)
        return search_pb2.RebuildResponse(searchable=True)


async def serve(config: SearchConfig, *, stop: asyncio.Event | None = None) -> None:
    """Run the search service until ``stop`` is set or SIGTERM/SIGINT arrives."""
    log_config(log, config)
    root = None if config.index_dir is None else Path(config.index_dir)
    store: StateStore = MemoryStateStore() if root is None else FileStateStore(root)
    catalog = IndexCatalog(
        config.maps, None if root is None else root / "indexes", heap_bytes=config.heap_mb << 20
    )
    live = LiveSearches()
    subscribers = Subscribers(live, config.subscriber_queue)
    indexer = Indexer(
        catalog,
        live,
        store,
        deliver=subscribers.deliver,
        commit_interval=config.commit_interval_ms / 1000,
        max_uncommitted=config.max_uncommitted,
    )
    clients = [
        StorageClient(addr, timeout=config.rpc_timeout_s) for _, addr in config.storage_nodes
    ]
    indexer.scanner = StorageScanner(clients)
    explicit = config.maps.explicit_maps
    follower = FeedFollower(
        # no searchable map at all: nothing to follow
        [] if explicit == () else clients,
        indexer,
        subscriber=config.service_id,
        map_names=explicit or (),
    )
    server = grpc.aio.server(options=CHANNEL_OPTIONS)
    port = server.add_insecure_port(f"{config.host}:{config.port}")
    if port == 0:
        raise SystemExit(f"cannot listen on {config.host}:{config.port}")
    config = dataclasses.replace(config, port=port)
    search_pb2_grpc.add_SearchServicer_to_server(
        SearchServicer(catalog, indexer, live, subscribers, follower), server
    )
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    try:
        async with asyncio.TaskGroup() as tg:
            await server.start()
            for name in ("", SERVICE_NAME):
                await health.set(name, health_pb2.HealthCheckResponse.SERVING)
            log.info(
                "search %s serving on %s:%d, following %d storage nodes, %s indexes",
                config.service_id,
                config.host,
                port,
                len(clients),
                "in-memory" if root is None else f"on disk in {root}",
            )
            announce_port(port)
            # before the feeds resume: a map they would create an index for from new changes
            # only must be recognised as unindexed first (a fresh start needs no scans, the
            # feeds' catch-up brings everything)
            if indexer.positions:
                for name in await unindexed_maps(clients, catalog):
                    log.info("map %r has records but no index here; rebuilding it", name)
                    indexer.request_rebuild(name)
            # modules, gRPC and the opened indexes are never garbage: keep the collector off them
            # (indexing allocates fast, and each full collection would walk them all again)
            freeze_heap()
            indexing = tg.create_task(indexer.run(), name="indexer")
            following = tg.create_task(follower.run(), name="feeds")
            await stop.wait()
            log.info("shutting down: no new calls, committing what is pending")
            await health.enter_graceful_shutdown()
            await server.stop(SHUTDOWN_GRACE_S)
            following.cancel()
            try:
                await asyncio.wait_for(indexer.flush(), FLUSH_TIMEOUT_S)
            except TimeoutError:
                log.error("pending changes were not committed within %.0fs", FLUSH_TIMEOUT_S)
            indexing.cancel()
    finally:
        catalog.close()
        for c in clients:
            await c.close()
    log.info("search %s stopped", config.service_id)
