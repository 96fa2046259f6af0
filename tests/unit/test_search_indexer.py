"""The indexer: commit batching (interval and size), skipping changes already seen, positions saved
only after commits, resuming after a restart without duplicates, rebuilds from a scan, and live
updates routed to subscribers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from services.search.catalog import IndexCatalog
from services.search.indexer import PUT, REMOVE, ChangeColumns, Indexer, ScannedRecords
from services.search.live import ChangeType, LiveSearches, SearchUpdate
from services.search.mapspec import SearchableMaps
from services.search.plan import SearchOptions, build_plan
from services.search.query import parse_query
from services.search.state import FileStateStore, MemoryStateStore, SearchState, StateStore
from services.search.subscribers import Subscribers


def changes(
    rows: list[tuple[str, str, int, Any, int, int]],
) -> ChangeColumns:
    """Rows of (map, key, kind, value, partition, seq)."""
    names: dict[str, int] = {}
    for m, *_ in rows:
        names.setdefault(m, len(names))
    return ChangeColumns(
        map_names=list(names),
        map_index=[names[r[0]] for r in rows],
        keys=[r[1] for r in rows],
        kinds=[r[2] for r in rows],
        values=[msgpack.packb(r[3]) if r[2] == PUT else b"" for r in rows],
        tags=["" for _ in rows],
        partitions=[r[4] for r in rows],
        seqs=[r[5] for r in rows],
    )


def puts(
    map_name: str, n: int, partition: int = 0, first_seq: int = 1, word: str = "w"
) -> ChangeColumns:
    return changes(
        [(map_name, f"k{i}", PUT, {"t": f"{word} {i}"}, partition, first_seq + i) for i in range(n)]
    )


def make(
    tmp_path: Path | None = None,
    *,
    maps: SearchableMaps | None = None,
    store: StateStore | None = None,
    updates: list[SearchUpdate] | None = None,
    live: LiveSearches | None = None,
    **kw: Any,
) -> Indexer:
    root = None if tmp_path is None else tmp_path / "indexes"
    catalog = IndexCatalog(maps or SearchableMaps(), root, heap_bytes=16 << 20)
    sink = updates if updates is not None else []
    return Indexer(
        catalog,
        live if live is not None else LiveSearches(),
        store or (MemoryStateStore() if tmp_path is None else FileStateStore(tmp_path)),
        deliver=sink.extend,
        **kw,
    )


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = check()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        assert asyncio.get_running_loop().time() < deadline, f"not reached within {timeout}s"
        await asyncio.sleep(0.01)


def docs(ix: Indexer, map_name: str) -> int:
    idx = ix.catalog.get(map_name)
    return 0 if idx is None else idx.num_docs


async def test_changes_become_searchable_once_the_commit_interval_passes() -> None:
    ix = make(commit_interval=0.05)
    task = asyncio.create_task(ix.run())
    try:
        await ix.submit(puts("m", 20))
        assert docs(ix, "m") == 0  # applied, not yet committed
        await eventually(lambda: docs(ix, "m") == 20)
        assert ix.commits == 1
    finally:
        task.cancel()


async def test_commit_comes_early_when_enough_changes_wait() -> None:
    ix = make(commit_interval=3600, max_uncommitted=10)
    task = asyncio.create_task(ix.run())
    try:
        await ix.submit(puts("m", 10))
        await eventually(lambda: docs(ix, "m") == 10)
    finally:
        task.cancel()


async def test_flush_commits_everything_submitted_before_it() -> None:
    ix = make(commit_interval=3600)
    task = asyncio.create_task(ix.run())
    try:
        await ix.submit(puts("m", 5))
        await asyncio.wait_for(ix.flush(), 5)
        assert docs(ix, "m") == 5
    finally:
        task.cancel()


async def test_changes_at_or_below_the_partition_position_are_skipped() -> None:
    ix = make()
    ix.apply(puts("m", 10, partition=3))
    ix.apply(puts("m", 10, partition=3))  # the same seqs again (a resumed feed)
    ix.apply(changes([("m", "k0", REMOVE, None, 3, 5)]))  # an older seq
    await ix.commit()
    assert ix.applied_changes == 10
    assert docs(ix, "m") == 10
    assert ix.positions == {3: 10}


async def test_positions_are_saved_only_after_a_commit(tmp_path: Path) -> None:
    ix = make(tmp_path)
    ix.apply(puts("m", 3, partition=7))
    assert FileStateStore(tmp_path).load().positions == {}
    await ix.commit()
    assert FileStateStore(tmp_path).load().positions == {7: 3}


async def test_restart_resumes_positions_and_a_replay_leaves_no_duplicates(tmp_path: Path) -> None:
    ix = make(tmp_path)
    ix.apply(puts("m", 50, partition=1))
    await ix.commit()
    # a crash after the commit but before the state file: the saved state lags behind the index
    FileStateStore(tmp_path).save(SearchState({1: 20}, ix.catalog.map_states()))
    ix.catalog.close()

    again = make(tmp_path)
    assert again.positions == {1: 20}
    again.apply(puts("m", 50, partition=1))  # the feed resends seqs 21..50
    await again.commit()
    assert again.applied_changes == 30
    assert docs(again, "m") == 50
    idx = again.catalog.get("m")
    assert idx is not None
    opts = SearchOptions(limit=100)
    hits = idx.search(build_plan(parse_query("w"), idx.schema, idx.field_targets, opts), opts)
    assert len(hits) == len({h.key for h in hits}) == 50


async def test_unsearchable_maps_advance_positions_without_an_index(tmp_path: Path) -> None:
    maps = SearchableMaps.parse('{"default": false, "maps": {"wanted": {}}}')
    ix = make(tmp_path, maps=maps)
    ix.apply(
        changes([("secret", "a", PUT, {"t": "x"}, 2, 1), ("wanted", "b", PUT, {"t": "y"}, 2, 2)])
    )
    await ix.commit()
    assert ix.catalog.get("secret") is None
    assert docs(ix, "wanted") == 1
    assert FileStateStore(tmp_path).load().positions == {2: 2}


class ListScanner:
    """The records a storage scan would return, in pages."""

    def __init__(self, records: dict[str, Any]) -> None:
        self.records = records
        self.scans = 0

    async def scan(self, map_name: str) -> AsyncIterator[ScannedRecords]:
        self.scans += 1
        items = list(self.records.items())
        for start in range(0, len(items), 3):
            page = items[start : start + 3]
            yield ScannedRecords(
                keys=[k for k, _ in page],
                kinds=[PUT] * len(page),
                values=[msgpack.packb(v) for _, v in page],
                tags=[""] * len(page),
            )


async def test_rebuild_replaces_the_index_with_the_scanned_records() -> None:
    ix = make(commit_interval=0.05)
    ix.apply(puts("m", 5, word="stale"))
    await ix.commit()
    ix.scanner = ListScanner({f"s{i}": {"t": f"fresh {i}"} for i in range(7)})
    task = asyncio.create_task(ix.run())
    try:
        ix.request_rebuild("m")
        await eventually(lambda: not ix.rebuild_queue and docs(ix, "m") == 7)
        idx = ix.catalog.get("m")
        assert idx is not None
        opts = SearchOptions(limit=100)
        stale = idx.search(
            build_plan(parse_query("stale"), idx.schema, idx.field_targets, opts), opts
        )
        assert stale == []
    finally:
        task.cancel()


async def test_live_updates_are_delivered_after_the_commit_that_makes_them_true() -> None:
    live = LiveSearches()
    updates: list[SearchUpdate] = []
    ix = make(live=live, updates=updates)
    ix.apply(puts("m", 1, word="zebra"))
    await ix.commit()
    idx = ix.catalog.get("m")
    assert idx is not None
    live.add("edge", "s", "m", parse_query("zebra"), SearchOptions(), idx.schema, [])
    ix.apply(changes([("m", "z", PUT, {"t": "zebra crossing"}, 0, 100)]))
    assert updates == []
    await ix.commit()
    assert [(u.key, u.change.value) for u in updates] == [("z", "ENTER")]


async def test_a_subscription_made_between_apply_and_commit_still_sees_the_change() -> None:
    live = LiveSearches()
    updates: list[SearchUpdate] = []
    ix = make(live=live, updates=updates)
    ix.apply(puts("m", 1, word="other"))
    await ix.commit()
    ix.apply(changes([("m", "z", PUT, {"t": "zebra"}, 0, 100)]))
    idx = ix.catalog.get("m")
    assert idx is not None
    live.add("edge", "s", "m", parse_query("zebra"), SearchOptions(), idx.schema, [])
    await ix.commit()
    assert [(u.key, u.change.value) for u in updates] == [("z", "ENTER")]


async def test_live_update_of_a_new_field_carries_its_matched_terms_and_value() -> None:
    live = LiveSearches()
    updates: list[SearchUpdate] = []
    ix = make(live=live, updates=updates)
    ix.apply(puts("m", 1, word="other"))
    await ix.commit()
    idx = ix.catalog.get("m")
    assert idx is not None
    opts = SearchOptions(include_value=True)
    live.add("edge", "s", "m", parse_query("title:zebra"), opts, idx.schema, [])
    value = {"title": "Zebra crossing", "n": 3, "tags": ["stripes"]}
    ix.apply(changes([("m", "z", PUT, value, 0, 100), ("m", "y", PUT, {"n": 1}, 0, 101)]))
    await ix.commit()
    assert [(u.key, u.change.value, u.matched_terms) for u in updates] == [
        ("z", "ENTER", ("zebra",))
    ]
    assert msgpack.unpackb(updates[0].value or b"") == value


def test_slow_subscriber_is_dropped_with_its_subscriptions() -> None:
    live = LiveSearches()
    subs = Subscribers(live, queue_size=2)
    stream = subs.open("edge")
    live.add("edge", "s", "m", parse_query("x"), SearchOptions(), None, [])
    update = SearchUpdate("edge", "s", "k", ChangeType.ENTER)
    subs.deliver([update])
    subs.deliver([update])
    assert not stream.dropped
    subs.deliver([update])  # the third batch does not fit
    assert stream.dropped
    assert "edge" not in subs
    assert len(live) == 0


def test_a_new_stream_replaces_the_old_one_of_the_same_subscriber() -> None:
    live = LiveSearches()
    subs = Subscribers(live)
    old = subs.open("edge")
    live.add("edge", "s", "m", parse_query("x"), SearchOptions(), None, [])
    new = subs.open("edge")
    assert old.replaced and old.queue.get_nowait() is None
    subs.close(old)  # the old stream ending must not take the subscriber's subscriptions along
    assert len(live) == 1
    subs.close(new)
    assert len(live) == 0


@pytest.mark.parametrize("backend", ["memory", "disk"])
async def test_indexes_of_both_backends_answer_the_same(tmp_path: Path, backend: str) -> None:
    ix = make(tmp_path if backend == "disk" else None)
    ix.apply(puts("m", 30))
    await ix.commit()
    assert docs(ix, "m") == 30
