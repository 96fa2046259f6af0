"""The search service against real storage nodes: documents written to storage become searchable
through the change feed, a restart resumes from the remembered feed positions without duplicates
(also after SIGKILL), a corrupt index is rebuilt from a scan, and live searches over gRPC see
ENTER / UPDATE / LEAVE."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from libs.search_client import (
    LiveSearch,
    LiveUpdate,
    QueryRejected,
    SearchClient,
    SearchHit,
    SearchOptions,
)
from libs.storage_client import OR_ADD, PUT, REMOVE, OpBatchBuilder, StorageClient, StorageRouter
from tests.integration.conftest import StorageNodes
from tests.support.processes import ServiceProcess, start_service

pytestmark = pytest.mark.integration

DOCS = {
    "art-1": {"title": "Machine learning basics", "body": "An introduction to machine learning"},
    "art-2": {"title": "Deep learning", "body": "Neural networks for machine vision"},
    "art-3": {"title": "Cooking pasta", "body": "Boil water, add salt, cook the pasta"},
    "art-4": {"title": "Learning to cook", "tags": ["kitchen", "beginner"]},
    "art-5": {"title": "Wireless networks", "body": "Radio, antennas and wireless protocols"},
}


class SearchProcess:
    """Starts ``python -m services.search`` against given storage nodes; always stops it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.procs: list[ServiceProcess] = []

    def start(self, storage: dict[str, ServiceProcess], *extra: str) -> ServiceProcess:
        nodes = ",".join(f"{n}={p.address}" for n, p in storage.items())
        args = ["--port", "0", "--storage-nodes", nodes, "--data-dir", str(self.data_dir)]
        proc = start_service(
            "services.search", [*args, "--commit-interval-ms", "50", "--heap-mb", "16", *extra]
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for p in self.procs:
            p.stop()


@pytest.fixture
def search_procs(tmp_path: Path) -> Iterator[SearchProcess]:
    s = SearchProcess(tmp_path / "search")
    try:
        yield s
    finally:
        s.stop_all()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"not reached within {timeout}s"
        await asyncio.sleep(0.02)


def puts(map_name: str, docs: dict[str, Any], millis: int) -> OpBatchBuilder:
    b = OpBatchBuilder()
    for k, v in docs.items():
        b.append(map_name, k, PUT, millis, 0, "writer", msgpack.packb(v), origin="test/1")
    return b


def removes(map_name: str, keys: list[str], millis: int) -> OpBatchBuilder:
    b = OpBatchBuilder()
    for k in keys:
        b.append(map_name, k, REMOVE, millis, 0, "writer", origin="test/1")
    return b


async def cluster_router(storage: dict[str, ServiceProcess]) -> StorageRouter:
    async with StorageClient(next(iter(storage.values())).address) as c:
        table = (await c.partition_info()).table
    return StorageRouter.connect(table)


def keys(hits: list[SearchHit]) -> list[str]:
    return [h.key for h in hits]


async def search_until(
    client: SearchClient,
    map_name: str,
    query: str,
    expect: Callable[[list[SearchHit]], bool],
    options: SearchOptions | None = None,
) -> list[SearchHit]:
    got: list[SearchHit] = []

    async def check() -> bool:
        nonlocal got
        got = await client.search(map_name, query, options)
        return expect(got)

    await eventually(check)
    return got


async def test_documents_written_to_storage_become_searchable_with_bm25_ranking(
    storage_nodes: StorageNodes, search_procs: SearchProcess
) -> None:
    storage = storage_nodes.cluster(2)
    search = search_procs.start(storage)
    router = await cluster_router(storage)
    try:
        await router.apply(puts("articles", DOCS, 1000))
        async with SearchClient(search.address) as sc:
            hits = await search_until(sc, "articles", "machine learning", lambda h: len(h) == 3)
            assert hits[0].key == "art-1"
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
            assert hits[0].matched_terms == ("machine", "learning")
            assert msgpack.unpackb(hits[0].value or b"") == DOCS["art-1"]

            assert keys(
                await sc.search("articles", "machine learning", SearchOptions(limit=1))
            ) == ["art-1"]
            cut = (hits[0].score + hits[1].score) / 2
            assert keys(
                await sc.search("articles", "machine learning", SearchOptions(min_score=cut))
            ) == ["art-1"]
            assert keys(await sc.search("articles", '"machine learning"')) == ["art-1"]
            assert set(keys(await sc.search("articles", "lerning~"))) == {"art-1", "art-2", "art-4"}
            assert set(keys(await sc.search("articles", "title:cook*"))) == {"art-3", "art-4"}
            assert keys(await sc.search("articles", "pasta -boil")) == []
            assert await sc.search("never-written", "anything") == []

            with pytest.raises(QueryRejected, match=r"'\(' is never closed \(at position 0\)"):
                await sc.search("articles", "(machine learning")

            # an update replaces the document, a remove deletes it
            await router.apply(puts("articles", {"art-3": {"title": "Risotto"}}, 2000))
            await router.apply(removes("articles", ["art-5"], 2000))
            await search_until(sc, "articles", "risotto", lambda h: keys(h) == ["art-3"])
            assert await sc.search("articles", "pasta") == []
            assert await sc.search("articles", "wireless") == []
            status = await sc.status()
            assert status.documents["articles"] == 4
            assert status.feeds == 2 and status.feeds_caught_up == 2
    finally:
        await router.close()


async def test_or_map_keys_are_searchable_with_all_their_values(
    storage_nodes: StorageNodes, search_procs: SearchProcess
) -> None:
    storage = {"solo": storage_nodes.start("solo")}
    search = search_procs.start(storage, "--backend", "memory")
    async with StorageClient(storage["solo"].address) as c, SearchClient(search.address) as sc:
        b = OpBatchBuilder()
        b.append("baskets", "b1", OR_ADD, 1000, 0, "w", msgpack.packb("red apple"), tag="1000:0:w")
        b.append("baskets", "b1", OR_ADD, 1001, 0, "w", msgpack.packb("green pear"), tag="1001:0:w")
        await c.apply(b)
        hits = await search_until(sc, "baskets", "apple pear", lambda h: len(h) == 1)
        assert hits[0].matched_terms == ("apple", "pear")
        assert sorted(msgpack.unpackb(hits[0].value or b"")) == ["green pear", "red apple"]


async def test_restart_resumes_from_remembered_positions_without_duplicates(
    storage_nodes: StorageNodes, search_procs: SearchProcess
) -> None:
    storage = storage_nodes.cluster(2)
    router = await cluster_router(storage)
    first = {f"doc-{i}": {"text": f"alpha document number {i}"} for i in range(300)}
    try:
        search = search_procs.start(storage)
        await router.apply(puts("notes", first, 1000))
        async with SearchClient(search.address) as sc:
            await eventually(lambda: _docs(sc, "notes", 300))
        search.stop()

        # while the service is down: 50 new documents, 20 rewritten, 10 removed
        new = {f"doc-{i}": {"text": f"beta document number {i}"} for i in range(300, 350)}
        rewritten = {f"doc-{i}": {"text": f"gamma rewritten {i}"} for i in range(20)}
        await router.apply(puts("notes", {**new, **rewritten}, 2000))
        await router.apply(removes("notes", [f"doc-{i}" for i in range(290, 300)], 2000))

        search = search_procs.start(storage)
        async with SearchClient(search.address) as sc:
            await eventually(lambda: _docs(sc, "notes", 340))
            status = await sc.status()
            # resumed, not replayed from the start: only the 80 changes made while it was down
            assert status.applied_changes == 80
            hits = await sc.search("notes", "document", SearchOptions(limit=1000))
            # 300 alpha - 20 rewritten - 10 removed, + 50 beta
            assert len(hits) == len(set(keys(hits))) == 270 + 50
            assert len(await sc.search("notes", "gamma", SearchOptions(limit=100))) == 20
            assert len(await sc.search("notes", "beta", SearchOptions(limit=100))) == 50
    finally:
        await router.close()


async def test_restart_after_sigkill_indexes_every_document_exactly_once(
    storage_nodes: StorageNodes, search_procs: SearchProcess
) -> None:
    storage = {"solo": storage_nodes.start("solo")}
    async with StorageClient(storage["solo"].address) as c:
        search = search_procs.start(storage)
        async with SearchClient(search.address) as sc:
            for round_ in range(5):
                docs = {f"k{round_}-{i}": {"t": f"word{i % 7} round{round_}"} for i in range(100)}
                await c.apply(puts("crash", docs, 1000 + round_))
            await eventually(lambda: _docs(sc, "crash", 500))
        search.kill()
        await c.apply(puts("crash", {"after": {"t": "after the crash"}}, 9000))
        search = search_procs.start(storage)
        async with SearchClient(search.address) as sc:
            await eventually(lambda: _docs(sc, "crash", 501))
            hits = await sc.search("crash", "word3", SearchOptions(limit=1000))
            assert len(hits) == len(set(keys(hits))) == sum(1 for i in range(100) if i % 7 == 3) * 5


async def test_corrupt_index_is_rebuilt_from_a_scan(
    storage_nodes: StorageNodes, search_procs: SearchProcess, tmp_path: Path
) -> None:
    storage = {"solo": storage_nodes.start("solo")}
    async with StorageClient(storage["solo"].address) as c:
        search = search_procs.start(storage)
        await c.apply(puts("articles", DOCS, 1000))
        async with SearchClient(search.address) as sc:
            await eventually(lambda: _docs(sc, "articles", len(DOCS)))
        search.stop()
        index_dirs = list((tmp_path / "search" / "indexes").iterdir())
        assert len(index_dirs) == 1
        (index_dirs[0] / "meta.json").write_text("{ this is not an index")

        search = search_procs.start(storage)
        async with SearchClient(search.address) as sc:
            # the feed has nothing new for the remembered positions: only the scan brings them back
            await search_until(sc, "articles", "pasta", lambda h: keys(h) == ["art-3"])
            assert (await sc.status()).documents["articles"] == len(DOCS)
            assert (await sc.status()).rebuilds_done == 1
            assert await sc.rebuild("articles") is True
            await eventually(lambda: _rebuilt(sc, 2))
            assert (await sc.status()).documents["articles"] == len(DOCS)


async def test_map_made_searchable_by_a_configuration_change_is_indexed_from_a_scan(
    storage_nodes: StorageNodes, search_procs: SearchProcess
) -> None:
    storage = {"solo": storage_nodes.start("solo")}
    only_a = '{"default": false, "maps": {"a": {}}}'
    async with StorageClient(storage["solo"].address) as c:
        search = search_procs.start(storage, "--maps", only_a)
        await c.apply(puts("a", {"a1": {"t": "apple"}}, 1000))
        await c.apply(puts("b", {"b1": {"t": "banana"}, "b2": {"t": "banana split"}}, 1000))
        async with SearchClient(search.address) as sc:
            await eventually(lambda: _docs(sc, "a", 1))
            assert await sc.search("b", "banana") == []
            assert "b" not in (await sc.status()).documents
        search.stop()

        search = search_procs.start(storage)  # now every map is searchable
        async with SearchClient(search.address) as sc:
            hits = await search_until(sc, "b", "banana", lambda h: len(h) == 2)
            assert keys(hits)[0] == "b1"
            assert (await sc.status()).rebuilds_done == 1


async def test_live_search_over_grpc_reports_enter_update_and_leave(
    storage_nodes: StorageNodes, search_procs: SearchProcess
) -> None:
    storage = {"solo": storage_nodes.start("solo")}
    search = search_procs.start(storage, "--backend", "memory")
    async with StorageClient(storage["solo"].address) as c, SearchClient(search.address) as sc:
        await c.apply(puts("news", {"n1": {"t": "wireless charging arrives"}}, 1000))
        await search_until(sc, "news", "wireless", lambda h: len(h) == 1)

        updates: list[LiveUpdate] = []
        first: list[list[SearchHit]] = []
        live = LiveSearch(sc, "edge-test", updates.append)
        runner = asyncio.create_task(live.run())
        try:
            await live.subscribe("s1", "news", "wireless", on_first=first.append)
            assert keys(first[0]) == ["n1"]

            # one write at a time: changes landing in one commit report only the final state
            steps = [
                (puts("news", {"n2": {"t": "wireless earbuds"}}, 2000), ("n2", "ENTER")),
                (
                    puts("news", {"n1": {"t": "wireless charging everywhere"}}, 2001),
                    ("n1", "UPDATE"),
                ),
                (puts("news", {"n2": {"t": "wired earbuds"}}, 2002), ("n2", "LEAVE")),
                (removes("news", ["n1"], 2003), ("n1", "LEAVE")),
            ]
            for i, (write, expected) in enumerate(steps):
                await c.apply(write)

                async def arrived(n: int = i + 1) -> bool:
                    return len(updates) >= n

                await eventually(arrived)
                assert (updates[i].key, updates[i].change_type) == expected
            assert len(updates) == 4
            assert updates[0].matched_terms == ("wireless",) and updates[0].score > 0
            assert msgpack.unpackb(updates[0].value or b"") == {"t": "wireless earbuds"}

            await live.unsubscribe("s1")
            await c.apply(puts("news", {"n3": {"t": "wireless again"}}, 3000))
            await search_until(sc, "news", "again", lambda h: len(h) == 1)
            assert len(updates) == 4
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)


async def _docs(sc: SearchClient, map_name: str, n: int) -> bool:
    return (await sc.status()).documents.get(map_name) == n


async def _rebuilt(sc: SearchClient, n: int) -> bool:
    status = await sc.status()
    return status.rebuilds_done == n and status.rebuilds_pending == 0
