"""Storage node throughput, latency and memory, measured through gRPC against real processes.

For each store (memory, SQLite with PERSISTED, PostgreSQL with PERSISTED) and batch size (100,
1,000 LWW puts of new keys), one client sends batches with a fixed number in flight and records
ops/s, per-batch latency and the node process's CPU time per op (user + system, all threads; the
figure that does not depend on what else runs on the machine). Then the RSS a memory node grows
by per million small records.
Prints one JSON document on stdout.

    .venv/bin/python bench/storage_bench.py [--ops 200000] [--in-flight 1 4] [--rss-records 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from libs.storage_client import PUT, OpBatchBuilder, StorageClient
from tests.support.processes import ServiceProcess, start_service
from topgun_rpc import common_pb2, storage_pb2

PG_DSN = os.environ.get("TOPGUN_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def requests(n_ops: int, batch: int, prefix: str, wc: int) -> list[storage_pb2.ApplyRequest]:
    """Pre-built Apply requests of new keys (client work is kept out of the timing)."""
    out = []
    value = msgpack.packb({"name": "abcdefgh", "n": 12345, "ok": True})
    t0 = 1_700_000_000_000
    for start in range(0, n_ops, batch):
        b = OpBatchBuilder()
        for i in range(start, min(n_ops, start + batch)):
            b.append("bench", f"{prefix}{i:08d}", PUT, t0 + i, 0, "bench-node", value)
        out.append(storage_pb2.ApplyRequest(ops=b.build(), write_concern=wc, timeout_ms=30000))  # type: ignore[arg-type]
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(
    address: str, reqs: list[storage_pb2.ApplyRequest], in_flight: int, pid: int
) -> dict[str, Any]:
    async with StorageClient(address, timeout=60) as c:
        stub = c.stub
        # Warm the channel.
        await stub.Apply(storage_pb2.ApplyRequest(ops=common_pb2.OpBatch()), timeout=10)
        latencies: list[float] = []
        it = iter(reqs)
        achieved: set[int] = set()

        async def worker() -> None:
            for req in it:
                t = time.perf_counter()
                resp = await stub.Apply(req, timeout=60)
                latencies.append(time.perf_counter() - t)
                achieved.add(resp.achieved)

        t0 = time.perf_counter()
        cpu0 = cpu_seconds(pid)
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(pid) - cpu0
    ops = sum(len(r.ops.keys) for r in reqs)
    lat = np.array(latencies) * 1000
    return {
        "ops": ops,
        "ops_per_s": round(ops / wall),
        "node_cpu_us_per_op": round(cpu / ops * 1e6, 2),
        "batch_latency_ms_p50": round(float(np.percentile(lat, 50)), 2),
        "batch_latency_ms_p99": round(float(np.percentile(lat, 99)), 2),
        "achieved": sorted(common_pb2.WriteConcern.Name(a) for a in achieved),  # type: ignore[arg-type]
    }


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def start(storage: str, data_dir: str, extra: list[str]) -> ServiceProcess:
    return start_service(
        "services.storage",
        [
            "--node-id",
            "bench",
            "--port",
            "0",
            "--storage",
            storage,
            "--data-dir",
            data_dir,
            "--log-level",
            "WARNING",
            *extra,
        ],
    )


async def pg_reachable() -> bool:
    import asyncpg

    try:
        conn = await asyncpg.connect(PG_DSN, timeout=3)
    except Exception:
        return False
    await conn.close()
    return True


async def drop_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_DSN, timeout=5)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--ops", type=int, default=200_000, help="ops per (store, batch size, in-flight)"
    )
    ap.add_argument("--batches", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--in-flight", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--rss-records", type=int, default=1_000_000)
    ap.add_argument("--skip-postgres", action="store_true")
    args = ap.parse_args()

    stores: list[tuple[str, str, int]] = [
        ("memory", "memory", common_pb2.APPLIED),
        ("sqlite", "sqlite", common_pb2.PERSISTED),
    ]
    if not args.skip_postgres and await pg_reachable():
        stores.append(("postgres", PG_DSN, common_pb2.PERSISTED))
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "throughput": [], "memory": {}}

    with tempfile.TemporaryDirectory(prefix="storage-bench-") as tmp:
        for label, storage, wc in stores:
            schema = f"bench_{uuid.uuid4().hex[:10]}"
            proc = start(storage, tmp, ["--pg-schema", schema])
            try:
                for batch in args.batches:
                    for inflight in args.in_flight:
                        reqs = requests(args.ops, batch, f"{label}-{batch}-{inflight}-", wc)
                        r = await drive(proc.address, reqs, inflight, proc.proc.pid)
                        r.update(
                            store=label,
                            write_concern=common_pb2.WriteConcern.Name(wc),  # type: ignore[arg-type]
                            batch=batch,
                            in_flight=inflight,
                        )
                        results["throughput"].append(r)
                        print(json.dumps(r), file=sys.stderr)
            finally:
                proc.stop()
                if label == "postgres":
                    await drop_schema(schema)
                for f in Path(tmp).glob("*.sqlite3*"):
                    f.unlink()

        if args.rss_records:
            proc = start("memory", tmp, [])
            try:
                base = rss_bytes(proc.proc.pid)
                reqs = requests(args.rss_records, 1000, "k", common_pb2.APPLIED)
                r = await drive(proc.address, reqs, 4, proc.proc.pid)
                grown = rss_bytes(proc.proc.pid) - base
                results["memory"] = {
                    "records": args.rss_records,
                    "key_bytes": 9,
                    "value_bytes": len(reqs[0].ops.values[0]),
                    "rss_before_mb": round(base / 2**20, 1),
                    "rss_growth_mb": round(grown / 2**20, 1),
                    "bytes_per_record": round(grown / args.rss_records),
                    "rss_per_1m_records_mb": round(grown / args.rss_records * 1e6 / 2**20, 1),
                    "load_ops_per_s": r["ops_per_s"],
                }
            finally:
                proc.stop()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
