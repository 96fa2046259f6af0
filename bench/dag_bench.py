"""Distributed query throughput, end to end, against the ``make up`` launcher.

Starts ``python -m services.up`` (three storage nodes, query_dag, the edge), writes N records of
ten fields into the storage nodes, then times three queries through the query_dag coordinator:

* a filtered count (``amount > 500``, a global count);
* a GROUP BY of 100 groups summing a float field;
* a top-100 sort on a float field.

Each query runs once cold (the storage nodes build their column cache) and then ``--runs``
times warm, the three interleaved; the figure is rows scanned per second of wall time (median
warm run, and the best run), next to the
same query as a plain Python loop over the records held in memory (the baseline) and as numpy
over columns built beforehand (the near-limit). Prints one JSON document.

    .venv/bin/python bench/dag_bench.py [--records 1000000] [--runs 5] [--storage memory]
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from libs.cluster.partition_table import PartitionTable  # noqa: E402
from libs.dag import QueryDagClient  # noqa: E402
from libs.storage_client import (  # noqa: E402
    PUT,
    OpBatchBuilder,
    StorageClient,
    StorageRouter,
    WriteConcern,
)

MAP = "bench_orders"
STATUSES = ["new", "paid", "packed", "shipped", "returned"]


def make_records(n: int, seed: int = 1) -> list[tuple[str, dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    region = rng.integers(0, 100, n)
    amount = np.round(rng.random(n) * 1000, 2)
    qty = rng.integers(1, 20, n)
    price = rng.integers(100, 10_000, n)
    status = rng.integers(0, 5, n)
    category = rng.integers(0, 20, n)
    score = rng.random(n)
    flag = rng.random(n) < 0.5
    ts = 1_700_000_000_000 + rng.integers(0, 10**9, n)
    recs = []
    for i in range(n):
        recs.append(
            (
                f"order-{i:07d}",
                {
                    "id": i,
                    "region": f"region-{int(region[i]):02d}",
                    "amount": float(amount[i]),
                    "qty": int(qty[i]),
                    "price": int(price[i]),
                    "status": STATUSES[int(status[i])],
                    "category": f"cat-{int(category[i])}",
                    "score": float(score[i]),
                    "flag": bool(flag[i]),
                    "ts": int(ts[i]),
                },
            )
        )
    return recs


class Up:
    """``python -m services.up`` as a child; ports read from its log lines."""

    def __init__(self, storage: str, data_dir: str, extra: list[str]) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", TOPGUN_NO_AUTH="1", TOPGUN_LOG_LEVEL="WARNING")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.up",
                "--port",
                "0",
                "--storage",
                storage,
                "--data-dir",
                data_dir,
                "--log-level",
                "INFO",
                *extra,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        self.ports: dict[str, int] = {}
        self._ready = threading.Event()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        if not self._ready.wait(120):
            self.stop()
            raise SystemExit("make up did not come up within 120s")

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            m = re.search(r"(\S+) ready on port (\d+)", raw.decode(errors="replace"))
            if m:
                self.ports[m.group(1)] = int(m.group(2))

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            if raw.startswith(b"PORT="):
                self._ready.set()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


async def current_table(addresses: dict[str, str]) -> PartitionTable:
    """The partition table the storage nodes use (the launcher's cluster may rebalance)."""
    best: PartitionTable | None = None
    for address in addresses.values():
        async with StorageClient(address, timeout=60) as client:
            info = await client.partition_info()
        if best is None or info.table.version > best.version:
            best = info.table
    assert best is not None
    return best


async def settle(addresses: dict[str, str], quiet_s: float = 3.0, limit_s: float = 120.0) -> int:
    """Wait until every storage node reports one partition table version, unchanged for
    ``quiet_s`` (the launcher's cluster forms and balances its table after start-up)."""
    deadline = time.monotonic() + limit_s
    stable_since, last = time.monotonic(), None
    while time.monotonic() < deadline:
        versions = set()
        for address in addresses.values():
            async with StorageClient(address, timeout=60) as client:
                versions.add((await client.partition_info()).table.version)
        now = (tuple(sorted(versions)), len(versions))
        if now != last or len(versions) != 1:
            stable_since, last = time.monotonic(), now
        elif time.monotonic() - stable_since >= quiet_s:
            return versions.pop()
        await asyncio.sleep(0.5)
    raise SystemExit("the storage nodes' partition table did not settle")


def storage_addresses(up: Up) -> dict[str, str]:
    return {
        n.removeprefix("storage-"): f"127.0.0.1:{p}"
        for n, p in up.ports.items()
        if n.startswith("storage-")
    }


async def load(up: Up, records: list[tuple[str, dict[str, Any]]]) -> float:
    addresses = storage_addresses(up)
    t0 = time.perf_counter()
    todo = records
    for _attempt in range(10):
        table = await current_table(addresses)
        router = StorageRouter.connect(table, timeout=60)
        failed: list[tuple[str, dict[str, Any]]] = []
        try:
            pending: list[tuple[list[tuple[str, Any]], asyncio.Task[Any]]] = []
            for start in range(0, len(todo), 10_000):
                chunk = todo[start : start + 10_000]
                b = OpBatchBuilder()
                for k, v in chunk:
                    b.append(MAP, k, PUT, 1_700_000_000_000, 0, "bench", msgpack.packb(v))
                task = asyncio.create_task(router.apply(b, WriteConcern.Value("APPLIED")))
                pending.append((chunk, task))
                if len(pending) >= 2:
                    done_chunk, t = pending.pop(0)
                    res = await t
                    failed += [done_chunk[i] for i in res.errors]
            for done_chunk, t in pending:
                res = await t
                failed += [done_chunk[i] for i in res.errors]
        finally:
            await router.close()
        if not failed:
            return time.perf_counter() - t0
        todo = failed  # the table moved under us: send the refused ones to the new owners
        await asyncio.sleep(0.5)
    raise SystemExit(f"{len(todo)} records could not be written")


QUERIES: dict[str, dict[str, Any]] = {
    "filtered_count": {
        "job": {
            "predicate": {"op": "gt", "attribute": "amount", "value": 500},
            "aggregations": [{"func": "count"}],
        },
    },
    "group_by_100_sum": {
        "query": {"groupBy": ["region"], "aggregations": [{"func": "sum", "field": "amount"}]},
    },
    "top_100_sort": {
        "query": {"sort": [{"field": "amount", "direction": "desc"}], "limit": 100},
    },
}


async def run_query(client: QueryDagClient, spec: dict[str, Any]) -> tuple[float, int, Any]:
    t0 = time.perf_counter()
    if "job" in spec:
        batches = [b async for b in client.run_job(MAP, spec["job"])]
        result: Any = [r for b in batches for r in b.rows()]
        n = len(result)
    else:
        res = await client.query(MAP, spec["query"])
        result, n = res.results, len(res.results)
    elapsed = time.perf_counter() - t0
    status = client.last_status
    scanned = status.rows_scanned if status is not None else 0
    return elapsed, scanned, (n, result[:1])


def python_baselines(records: list[tuple[str, dict[str, Any]]]) -> dict[str, Callable[[], Any]]:
    def count() -> int:
        c = 0
        for _, v in records:
            if v["amount"] > 500:
                c += 1
        return c

    def group() -> dict[str, float]:
        sums: dict[str, float] = {}
        for _, v in records:
            r = v["region"]
            sums[r] = sums.get(r, 0.0) + v["amount"]
        return sums

    def top() -> list[tuple[str, dict[str, Any]]]:
        return heapq.nlargest(100, records, key=lambda kv: kv[1]["amount"])

    return {"filtered_count": count, "group_by_100_sum": group, "top_100_sort": top}


def numpy_baselines(records: list[tuple[str, dict[str, Any]]]) -> dict[str, Callable[[], Any]]:
    amount = np.fromiter((v["amount"] for _, v in records), np.float64, len(records))
    region = np.fromiter((int(v["region"][7:]) for _, v in records), np.int64, len(records))
    return {
        "filtered_count": lambda: int((amount > 500).sum()),
        "group_by_100_sum": lambda: np.bincount(region, weights=amount, minlength=100),
        "top_100_sort": lambda: np.sort(np.argpartition(-amount, 100)[:100]),
    }


def best_of(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    records = make_records(args.records)
    out: dict[str, Any] = {
        "records": args.records,
        "fields_per_record": 10,
        "storage": args.storage,
        "search_running": not args.no_search,
        "runs": args.runs,
        "cpus": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory() as data_dir:
        up = Up(args.storage, data_dir, ["--no-search"] if args.no_search else [])
        try:
            out["table_version"] = await settle(storage_addresses(up))
            out["load_s"] = round(await load(up, records), 2)
            await settle(storage_addresses(up))
            out["load_records_per_s"] = round(args.records / out["load_s"])
            address = f"127.0.0.1:{up.ports['query_dag']}"
            async with QueryDagClient(address, timeout=300) as client:
                results: dict[str, Any] = {}
                warm: dict[str, list[float]] = {name: [] for name in QUERIES}
                for name, spec in QUERIES.items():  # cold: the nodes build their column cache
                    cold, scanned, _ = await run_query(client, spec)
                    results[name] = {"rows_scanned": scanned, "cold_s": round(cold, 4)}
                    if scanned != args.records:
                        raise SystemExit(f"{name} scanned {scanned} rows of {args.records}")
                for _ in range(args.runs):  # warm, interleaved so background work hits all alike
                    for name, spec in QUERIES.items():
                        t, _, _ = await run_query(client, spec)
                        warm[name].append(t)
                for name, times in warm.items():
                    med = statistics.median(times)
                    results[name].update(
                        warm_median_s=round(med, 4),
                        warm_min_s=round(min(times), 4),
                        rows_per_s_end_to_end=round(args.records / med),
                        rows_per_s_best_run=round(args.records / min(times)),
                    )
        finally:
            up.stop()
    py = python_baselines(records)
    npb = numpy_baselines(records)
    for name, r in results.items():
        tp = best_of(py[name], 3)
        tn = best_of(npb[name], 5)
        r["python_loop_rows_per_s"] = round(args.records / tp)
        r["numpy_columns_rows_per_s"] = round(args.records / tn)
        r["vs_python_loop"] = round(r["rows_per_s_end_to_end"] / r["python_loop_rows_per_s"], 2)
        r["of_numpy_limit"] = round(r["rows_per_s_end_to_end"] / r["numpy_columns_rows_per_s"], 4)
    out["queries"] = results
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument(
        "--storage", default="memory", help="memory (default) or sqlite, as make up takes"
    )
    p.add_argument(
        "--no-search",
        action="store_true",
        help="start make up without the search service (it indexes the records as they load)",
    )
    args = p.parse_args()
    print(json.dumps(asyncio.run(bench(args)), indent=2))


if __name__ == "__main__":
    main()
