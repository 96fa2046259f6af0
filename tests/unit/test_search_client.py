"""libs.search_client against a real in-process gRPC search server: searches over the shared
stream and as unary calls agree, a malformed query is rejected with its reason, the stream is
reopened after the server restarts, and live searches hand over first results before updates."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from libs.search_client import (
    LiveSearch,
    LiveUpdate,
    QueryRejected,
    SearchClient,
    SearchHit,
    SearchOptions,
    SearchUnavailable,
)
from services.search.catalog import IndexCatalog
from services.search.indexer import PUT, Indexer
from services.search.live import LiveSearches
from services.search.mapspec import SearchableMaps
from services.search.server import SearchServicer
from services.search.state import MemoryStateStore
from services.search.subscribers import Subscribers
from tests.support.processes import free_port
from tests.unit.test_search_indexer import changes
from topgun_rpc import search_pb2_grpc


@dataclass
class Served:
    indexer: Indexer
    server: grpc.aio.Server
    address: str


async def serve(port: int) -> Served:
    live = LiveSearches()
    subscribers = Subscribers(live)
    catalog = IndexCatalog(SearchableMaps(), None, heap_bytes=16 << 20)
    indexer = Indexer(catalog, live, MemoryStateStore(), deliver=subscribers.deliver)
    server = grpc.aio.server()
    search_pb2_grpc.add_SearchServicer_to_server(
        SearchServicer(catalog, indexer, live, subscribers), server
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return Served(indexer, server, f"127.0.0.1:{port}")


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    s = await serve(free_port())
    s.indexer.apply(
        changes(
            [
                ("m", "a", PUT, {"t": "green tea"}, 0, 1),
                ("m", "b", PUT, {"t": "black tea with milk"}, 0, 2),
                ("m", "c", PUT, {"t": "coffee"}, 0, 3),
            ]
        )
    )
    await s.indexer.commit()
    try:
        yield s
    finally:
        await s.server.stop(None)


def keys(hits: list[SearchHit]) -> list[str]:
    return [h.key for h in hits]


async def test_stream_and_unary_searches_return_the_same_hits(served: Served) -> None:
    async with SearchClient(served.address) as sc:
        streamed = await sc.search("m", "tea milk")
        unary = await sc.search_unary("m", "tea milk")
        assert streamed == unary
        assert keys(streamed) == ["b", "a"]
        many = await asyncio.gather(*(sc.search("m", q) for q in ["tea", "coffee", "milk"] * 20))
        assert [keys(h) for h in many[:3]] == [["a", "b"], ["c"], ["b"]]
        assert await sc.search("unknown", "tea") == []
        assert keys(await sc.search("m", "tea", SearchOptions(limit=1))) == ["a"]


async def test_malformed_query_is_rejected_with_its_reason_on_both_paths(served: Served) -> None:
    async with SearchClient(served.address) as sc:
        with pytest.raises(QueryRejected, match=r"malformed query: .*'\(' is never closed"):
            await sc.search("m", "(tea")
        with pytest.raises(QueryRejected, match="never closed"):
            await sc.search_unary("m", "(tea")
        with pytest.raises(QueryRejected, match="must be a non-negative number"):
            await sc.search("m", "tea", SearchOptions(boost={"t": -1.0}))
        assert keys(await sc.search("m", "coffee")) == ["c"]  # the stream is still usable


async def test_stream_is_reopened_after_the_server_restarts(served: Served) -> None:
    port = int(served.address.rsplit(":", 1)[1])
    async with SearchClient(served.address, timeout=2.0) as sc:
        assert keys(await sc.search("m", "coffee")) == ["c"]
        await served.server.stop(None)
        with pytest.raises(SearchUnavailable):
            await sc.search("m", "coffee")
        again = await serve(port)
        try:
            deadline = asyncio.get_running_loop().time() + 10
            while True:
                try:
                    assert await sc.search("m", "coffee") == []  # a fresh, empty server
                    break
                except SearchUnavailable:
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.05)
        finally:
            await again.server.stop(None)


async def test_a_search_waits_briefly_for_a_service_that_is_still_starting() -> None:
    port = free_port()
    async with SearchClient(f"127.0.0.1:{port}", timeout=5.0) as sc:
        # the channel's first connection attempt fails: nothing listens yet
        with pytest.raises(SearchUnavailable):
            await sc.status(timeout=0.2)

        async def start_soon() -> Served:
            await asyncio.sleep(0.3)
            return await serve(port)

        starting = asyncio.create_task(start_soon())
        try:
            assert await sc.search("m", "coffee") == []  # answered once the service is up
        finally:
            await (await starting).server.stop(None)


async def test_live_search_hands_over_first_results_before_any_update(served: Served) -> None:
    events: list[tuple[str, object]] = []
    async with SearchClient(served.address) as sc:
        live = LiveSearch(sc, "edge-x", lambda u: events.append(("update", u)))
        runner = asyncio.create_task(live.run())
        try:
            await live.subscribe("s", "m", "tea", on_first=lambda h: events.append(("first", h)))
            served.indexer.apply(changes([("m", "d", PUT, {"t": "mint tea"}, 0, 10)]))
            await served.indexer.commit()
            deadline = asyncio.get_running_loop().time() + 5
            while len(events) < 2:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.01)
            kind, first = events[0]
            assert kind == "first" and isinstance(first, list) and keys(first) == ["a", "b"]
            kind, update = events[1]
            assert kind == "update" and isinstance(update, LiveUpdate)
            assert (update.key, update.change_type) == ("d", "ENTER")
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
