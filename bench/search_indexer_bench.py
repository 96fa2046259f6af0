"""Indexer micro-benchmark: CPU per indexed write of the search service's indexer, in-process.

    .venv/bin/python bench/search_indexer_bench.py [--docs 300000] [--batches 100,2000]

Feeds ``Indexer.apply`` change batches the way the change feeds do (PUTs of fresh keys over 90
partitions, a commit every ``--commit-every`` changes, an on-disk index and state file) and prints
JSON: per document kind and batch size, the process CPU (every thread: the apply loop, tantivy's
indexing, merging and commit threads) and the CPU of the applying thread alone, in µs per change.
Kinds: ``small`` is the edge benchmark's value (``{"n": 1, "owner": "w20x100-3", "ok": True}``),
``text`` the search benchmark's 20-word documents (``{"title": 5 words, "body": 15 words}``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from search_bench import corpus

from services.search.catalog import IndexCatalog
from services.search.indexer import PUT, ChangeColumns, Indexer
from services.search.live import LiveSearches
from services.search.mapspec import SearchableMaps
from services.search.state import FileStateStore

PARTITIONS = 90


def values_of(kind: str, n: int) -> list[bytes]:
    if kind == "small":
        return [msgpack.packb({"n": i, "owner": f"w20x100-{i % 20}", "ok": True}) for i in range(n)]
    return [msgpack.packb(d) for d in corpus(n)[1]]


def batches(values: list[bytes], size: int) -> list[ChangeColumns]:
    out = []
    for start in range(0, len(values), size):
        part = values[start : start + size]
        n = len(part)
        out.append(
            ChangeColumns(
                map_names=["bench"],
                map_index=[0] * n,
                keys=[f"w20x100-{(start + i) % 20}-{start + i}" for i in range(n)],
                kinds=[PUT] * n,
                values=part,
                tags=[""] * n,
                partitions=[(start + i) % PARTITIONS for i in range(n)],
                seqs=[start + i + 1 for i in range(n)],
            )
        )
    return out


async def run(kind: str, size: int, docs: int, commit_every: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        catalog = IndexCatalog(SearchableMaps(), root / "indexes")
        indexer = Indexer(catalog, LiveSearches(), FileStateStore(root), deliver=lambda u: None)
        feed = batches(values_of(kind, docs), size)
        gc.collect()
        gc.freeze()  # the prepared batches are not the indexer's garbage
        wall, cpu, applying = time.perf_counter(), time.process_time(), 0.0
        since = 0
        for batch in feed:
            t = time.thread_time()
            indexer.apply(batch)
            applying += time.thread_time() - t
            since += len(batch)
            if since >= commit_every:
                await indexer.commit()
                since = 0
        await indexer.commit()
        cpu = time.process_time() - cpu
        wall = time.perf_counter() - wall
        catalog.close()
        gc.unfreeze()
    return {
        "kind": kind,
        "batch": size,
        "docs": indexer.applied_changes,
        "cpu_us_per_doc": round(cpu / docs * 1e6, 2),
        "apply_thread_us_per_doc": round(applying / docs * 1e6, 2),
        "seconds": round(wall, 2),
    }


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs", type=int, default=300_000)
    p.add_argument("--batches", default="100,2000", help="batch sizes, comma-separated")
    p.add_argument("--kinds", default="small,text")
    p.add_argument("--commit-every", type=int, default=5000)
    a = p.parse_args()
    rows = [
        await run(kind, int(size), a.docs, a.commit_every)
        for kind in a.kinds.split(",")
        for size in a.batches.split(",")
    ]
    print(json.dumps({"runs": rows, "load_average": os.getloadavg()}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
