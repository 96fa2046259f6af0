"""SDK benchmark: the Python client against the whole system, figures as JSON on stdout.

    .venv/bin/python bench/sdk_bench.py                  # starts `python -m services.up` itself
    .venv/bin/python bench/sdk_bench.py --url ws://127.0.0.1:8080/ws   # against a running system

Measures, from the SDK's point of view:

* acked writes/s from one client: ``map.set`` in a loop, ``await map.flush()`` after every
  1,000 writes (so every write counted was acknowledged by the server); and the same with the
  application writing on while up to 4 such chunks wait for their acks;
* cold sync: a fresh client with an empty store opens a map the server holds 100,000 records
  of, and the Merkle walk pulls them all (seconds, records/s), into memory and into a store
  file;
* live-query latency: client A writes, client B's live query reports the change (lock-step,
  p50/p99).

When it starts the system itself it uses the launcher's defaults, as ``make up`` does (SQLite in
a temporary data directory, the default per-connection rate limit of 20,000 ops/s). The client
runs on uvloop when it is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import topgun  # noqa: E402
from tests.support.processes import start_service  # noqa: E402
from tests.support.wsclient import WsClient, hlc, lww_put  # noqa: E402


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def acked_writes(url: str, writes: int, flush_every: int) -> dict[str, Any]:
    name = f"bench-writes-{os.getpid()}"
    async with topgun.TopGunClient(url) as c:
        await c.wait_ready(30)
        m = c.lww_map(name)
        # warm-up (first frames, JIT-free but caches and connections settle)
        for i in range(flush_every):
            m.set(f"warm-{i}", {"i": i})
        await m.flush(60)
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        for i in range(writes):
            m.set(f"key-{i}", {"i": i, "name": f"item {i}", "done": i % 2 == 0})
            if (i + 1) % flush_every == 0:
                await m.flush(60)
        await m.flush(60)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    return {
        "writes": writes,
        "flush_every": flush_every,
        "seconds": round(elapsed, 3),
        "acked_writes_per_s": round(writes / elapsed),
        "client_cpu_us_per_write": round(cpu / writes * 1e6, 1),
    }


async def pipelined_writes(url: str, writes: int, chunk: int, window: int) -> dict[str, Any]:
    """Writes in chunks of ``chunk``, each chunk flushed, with up to ``window`` chunks in flight
    (the application keeps writing while earlier chunks wait for their acks)."""
    name = f"bench-pipelined-{os.getpid()}"
    async with topgun.TopGunClient(url) as c:
        await c.wait_ready(30)
        m = c.lww_map(name)
        t0 = time.perf_counter()
        in_flight: list[topgun.WriteOp] = []
        for i in range(writes):
            op = m.set(f"key-{i}", {"i": i, "name": f"item {i}", "done": i % 2 == 0})
            if (i + 1) % chunk == 0:
                in_flight.append(op)
                await asyncio.sleep(0)  # let the chunk go out now
                if len(in_flight) >= window:
                    await c.wait_acked(in_flight.pop(0), 60)
        await m.flush(60)
        elapsed = time.perf_counter() - t0
    return {
        "writes": writes,
        "chunk": chunk,
        "chunks_in_flight": window,
        "seconds": round(elapsed, 3),
        "acked_writes_per_s": round(writes / elapsed),
    }


async def load_map(url: str, name: str, records: int) -> float:
    """Write ``records`` records through 4 raw connections (1,000 ops per OP_BATCH)."""
    t0 = time.perf_counter()
    loaders = [await WsClient.connect(url) for _ in range(4)]
    try:

        async def load(c: WsClient, part: int) -> None:
            for start in range(part * 1000, records, 4000):
                ops = [
                    lww_put(name, f"rec-{i}", {"i": i, "title": f"record {i}"}, timestamp=hlc())
                    for i in range(start, min(start + 1000, records))
                ]
                await c.write_batch(ops, timeout=120)

        await asyncio.gather(*(load(c, i) for i, c in enumerate(loaders)))
    finally:
        for c in loaders:
            await c.close()
    return time.perf_counter() - t0


async def cold_sync(url: str, name: str, records: int, store: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    async with topgun.TopGunClient(url, store=store) as c:
        m = c.lww_map(name)
        await c.wait_synced(name, 300)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        got = len(m)
        stats = c.sync.stats[name]
    return {
        "store": "memory" if store == ":memory:" else "file",
        "records": got,
        "complete": stats.complete and got == records,
        "seconds": round(elapsed, 2),
        "records_per_s": round(got / elapsed),
        "client_cpu_seconds": round(cpu, 2),
    }


async def live_query_latency(url: str, updates: int) -> dict[str, Any]:
    name = f"bench-live-{os.getpid()}"
    async with topgun.TopGunClient(url) as a, topgun.TopGunClient(url) as b:
        await a.wait_ready(30)
        await b.wait_ready(30)
        m = a.lww_map(name)
        q = b.query(name, predicate={"op": "gte", "attribute": "n", "value": 0})
        await q.ready(30)
        changes = q.changes()
        lat: list[float] = []
        for i in range(updates + 20):
            t0 = time.perf_counter()
            m.set(f"k{i % 50}", {"n": i})
            await changes.get(30)
            if i >= 20:  # the first few settle connections and caches
                lat.append((time.perf_counter() - t0) * 1000)
        q.close()
    return {
        "updates": updates,
        "p50_ms": round(pct(lat, 0.50), 2),
        "p99_ms": round(pct(lat, 0.99), 2),
        "max_ms": round(max(lat), 2),
    }


async def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"url": url}
    only = set(args.only.split(",")) if args.only else {"writes", "sync", "live"}
    if "writes" in only:
        out["acked_writes_one_client"] = await acked_writes(url, args.writes, 1000)
        out["acked_writes_one_client_pipelined"] = await pipelined_writes(url, args.writes, 1000, 4)
    if "sync" in only:
        name = f"bench-sync-{os.getpid()}"
        load_s = await load_map(url, name, args.sync_records)
        out["cold_sync"] = {"records_loaded": args.sync_records, "load_seconds": round(load_s, 2)}
        out["cold_sync"]["into_memory"] = await cold_sync(url, name, args.sync_records, ":memory:")
        with tempfile.TemporaryDirectory(prefix="topgun-sdk-bench-") as d:
            out["cold_sync"]["into_store_file"] = await cold_sync(
                url, name, args.sync_records, str(Path(d) / "replica.db")
            )
    if "live" in only:
        out["live_query_change_latency"] = await live_query_latency(url, args.live_updates)
    return out


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--url", default="", help="a running edge; default: start make-up's launcher")
    p.add_argument("--writes", type=int, default=50_000)
    p.add_argument("--sync-records", type=int, default=100_000)
    p.add_argument("--live-updates", type=int, default=300)
    p.add_argument("--storage", default="sqlite", help="storage of the launched system")
    p.add_argument("--only", default="", help="comma list: writes,sync,live")
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.url:
        print(json.dumps(asyncio.run(run(args.url, args)), indent=2))
        return 0
    with tempfile.TemporaryDirectory(prefix="topgun-bench-") as data:
        env = {"TOPGUN_NO_AUTH": "1", "TOPGUN_LOG_LEVEL": "WARNING"}
        svc = start_service(
            "services.up",
            ["--port", "0", "--storage", args.storage, "--data-dir", data],
            env=env,
            ready_timeout=120,
        )
        try:
            url = f"ws://127.0.0.1:{svc.port}/ws"
            result = asyncio.run(run(url, args))
            result["system"] = {"storage": args.storage, "cores": os.cpu_count()}
            print(json.dumps(result, indent=2))
        finally:
            svc.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
