"""Records with a TTL: a search (and a live search's scoring) leaves out a document once its record
has expired (``millis + ttlMs < now``, as the client judges it), OR keys expire when every record
has, the indexer deletes expired documents in sweeps, and an index reopened from disk still
knows it holds expiring documents."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgpack

from services.search.catalog import IndexCatalog
from services.search.index import Hit, MapIndex
from services.search.indexer import OR_ADD, PUT, ChangeColumns, Indexer
from services.search.live import LiveSearches
from services.search.mapspec import MapSpec, SearchableMaps
from services.search.plan import SearchOptions, build_plan
from services.search.query import parse_query
from services.search.state import MemoryStateStore

T0 = 1_800_000_000_000  # epoch millis the fake clock starts at


class Clock:
    def __init__(self, ms: int = T0) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def pack(v: Any) -> bytes:
    return msgpack.packb(v, use_bin_type=True)


def search(idx: MapIndex, query: str) -> list[Hit]:
    opts = SearchOptions()
    return idx.search(build_plan(parse_query(query), idx.schema, idx.field_targets, opts), opts)


def keys(hits: list[Hit]) -> set[str]:
    return {h.key for h in hits}


def test_a_record_stops_being_a_hit_once_its_ttl_has_passed() -> None:
    clock = Clock()
    idx = MapIndex("m", MapSpec(), clock=clock)
    idx.upsert("short", pack({"t": "apple pie"}), expires=T0 + 1_000)
    idx.upsert("long", pack({"t": "apple tart"}), expires=T0 + 60_000)
    idx.upsert("forever", pack({"t": "apple juice"}))
    idx.commit()
    assert keys(search(idx, "apple")) == {"short", "long", "forever"}
    clock.ms = T0 + 1_000  # expiry == now: not yet expired (millis + ttl < now is)
    assert keys(search(idx, "apple")) == {"short", "long", "forever"}
    clock.ms = T0 + 1_001
    assert keys(search(idx, "apple")) == {"long", "forever"}
    clock.ms = T0 + 60_001
    assert keys(search(idx, "apple")) == {"forever"}


def test_scores_of_leaves_out_expired_documents() -> None:
    clock = Clock()
    idx = MapIndex("m", MapSpec(), clock=clock)
    idx.upsert("a", pack({"t": "plum"}), expires=T0 + 10)
    idx.upsert("b", pack({"t": "plum"}))
    idx.commit()
    opts = SearchOptions()
    plan = build_plan(parse_query("plum"), idx.schema, idx.field_targets, opts)
    assert set(idx.scores_of(plan, ["a", "b"])) == {"a", "b"}
    clock.ms = T0 + 11
    assert set(idx.scores_of(plan, ["a", "b"])) == {"b"}


def test_rewriting_a_key_without_a_ttl_makes_it_live_again() -> None:
    clock = Clock()
    idx = MapIndex("m", MapSpec(), clock=clock)
    idx.upsert("k", pack({"t": "fig"}), expires=T0 + 10)
    idx.commit()
    clock.ms = T0 + 20
    assert search(idx, "fig") == []
    idx.upsert("k", pack({"t": "fig"}))
    idx.commit()
    assert keys(search(idx, "fig")) == {"k"}


def test_an_or_key_expires_when_every_record_has() -> None:
    clock = Clock()
    idx = MapIndex("m", MapSpec(), clock=clock)
    idx.or_add("k", "t1", pack("red kiwi"), expires=T0 + 10)
    idx.or_add("k", "t2", pack("green kiwi"), expires=T0 + 20)
    idx.or_add("j", "t3", pack("kiwi"), expires=T0 + 10)
    idx.or_add("j", "t4", pack("kiwi"))  # no TTL: j never expires
    idx.commit()
    clock.ms = T0 + 15
    assert keys(search(idx, "kiwi")) == {"k", "j"}
    clock.ms = T0 + 25
    assert keys(search(idx, "kiwi")) == {"j"}
    # dropping the longer-lived record leaves the earlier expiry in charge
    clock.ms = T0 + 5
    idx.or_remove("k", "t2")
    idx.commit()
    clock.ms = T0 + 15
    assert keys(search(idx, "kiwi")) == {"j"}


def test_purge_deletes_expired_documents_at_the_next_commit() -> None:
    clock = Clock()
    idx = MapIndex("m", MapSpec(), clock=clock)
    assert idx.purge_expired() == 0
    for i in range(5):
        idx.upsert(f"k{i}", pack({"t": "pear"}), expires=T0 + i * 10)
    idx.upsert("live", pack({"t": "pear"}))
    idx.commit()
    clock.ms = T0 + 25  # k0, k1, k2 expired
    assert idx.purge_expired() == 3
    idx.commit()
    assert idx.num_docs == 3
    assert keys(search(idx, "pear")) == {"k3", "k4", "live"}


def test_a_reopened_index_still_filters_expired_documents(tmp_path: Path) -> None:
    clock = Clock()
    idx = MapIndex("m", MapSpec(), tmp_path / "m", clock=clock)
    idx.upsert("a", pack({"t": "lime"}), expires=T0 + 10)
    idx.upsert("b", pack({"t": "lime"}))
    idx.commit()
    idx.close()
    again = MapIndex("m", MapSpec(), tmp_path / "m", clock=clock)
    assert again.has_expiring
    clock.ms = T0 + 11
    assert keys(search(again, "lime")) == {"b"}
    again.close()


def _batch(rows: list[tuple[str, int, Any, str, int, int, int]]) -> ChangeColumns:
    """Rows of (key, kind, value, tag, millis, ttl, seq) of map ``m``, partition 0."""
    return ChangeColumns(
        map_names=["m"],
        map_index=[0] * len(rows),
        keys=[r[0] for r in rows],
        kinds=[r[1] for r in rows],
        values=[pack(r[2]) for r in rows],
        tags=[r[3] for r in rows],
        partitions=[0] * len(rows),
        seqs=[r[6] for r in rows],
        millis=[r[4] for r in rows],
        ttl_ms=[r[5] for r in rows],
    )


async def test_the_indexer_indexes_ttls_and_purges_expired_documents() -> None:
    catalog = IndexCatalog(SearchableMaps(), None, heap_bytes=16 << 20)
    ix = Indexer(catalog, LiveSearches(), MemoryStateStore(), deliver=lambda _: None)
    now = int(time.time() * 1000)
    ix.apply(
        _batch(
            [
                ("gone", PUT, {"t": "melon"}, "", now - 10_000, 1_000, 1),
                ("soon", PUT, {"t": "melon"}, "", now, 600_000, 2),
                ("kept", PUT, {"t": "melon"}, "", now, 0, 3),
                ("or", OR_ADD, "melon", "tag", now - 10_000, 1_000, 4),
            ]
        )
    )
    await ix.commit()
    idx = catalog.get("m")
    assert idx is not None and idx.has_expiring
    assert keys(search(idx, "melon")) == {"soon", "kept"}
    assert idx.num_docs == 4
    ix.purge_expired()
    await ix.commit()
    assert ix.purged == 2
    assert idx.num_docs == 2
    assert keys(search(idx, "melon")) == {"soon", "kept"}
