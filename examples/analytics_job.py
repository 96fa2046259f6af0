"""An analytics job on the query_dag coordinator: revenue per region, computed next to the data.

    .venv/bin/python examples/analytics_job.py
    .venv/bin/python examples/analytics_job.py --edge ws://127.0.0.1:8080/ws --query-dag 127.0.0.1:PORT

Without flags the script starts TopGun-py itself (``python -m services.up`` on free ports, data in
memory). With ``--edge`` and ``--query-dag`` it uses a running ``make up`` (the launcher logs
``query_dag ready on port N``). Then:

1. it writes 2,000 orders through the Python SDK (over the edge's WebSocket);
2. it prints the plan of a GROUP BY job — what each storage node runs over its partitions
   (source with the filter pushed down, partial aggregate) and what the coordinator runs;
3. it runs the job and prints the groups and the per-vertex counters of the job.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import topgun  # noqa: E402
from libs.dag import QueryDagClient, concat_batches  # noqa: E402

JOB = {
    "predicate": {"op": "neq", "attribute": "status", "value": "cancelled"},
    "groupBy": ["region"],
    "aggregations": [
        {"func": "count"},
        {"func": "sum", "field": "amount"},
        {"func": "avg", "field": "amount"},
        {"func": "count_distinct", "field": "customer"},
    ],
    "sort": [{"field": "__sum_amount", "direction": "desc"}],
}


def start_up() -> tuple[subprocess.Popen[bytes], str, str]:
    """``python -m services.up`` on a free port; returns it, the edge URL, the query_dag address."""
    env = dict(os.environ, TOPGUN_NO_AUTH="1", STORAGE_BACKEND="null", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.up", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    ports: dict[str, str] = {}
    ready = threading.Event()

    def read_logs() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            m = re.search(rb"query_dag ready on port (\d+)", line)
            if m:
                ports["query_dag"] = m.group(1).decode()

    def read_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(b"PORT="):
                ports["edge"] = line[5:].strip().decode()
                ready.set()

    threading.Thread(target=read_logs, daemon=True).start()
    threading.Thread(target=read_stdout, daemon=True).start()
    if not ready.wait(120) or "query_dag" not in ports:
        proc.kill()
        raise SystemExit("TopGun-py did not start (or started without query_dag)")
    return proc, f"ws://127.0.0.1:{ports['edge']}/ws", f"127.0.0.1:{ports['query_dag']}"


async def write_orders(edge: str, n: int) -> None:
    rng = random.Random(42)
    async with topgun.TopGunClient(edge) as client:
        orders = client.lww_map("orders")
        for i in range(n):
            orders.set(
                f"order-{i:05d}",
                {
                    "region": rng.choice(["north", "south", "east", "west"]),
                    "customer": f"c{rng.randint(1, 300)}",
                    "amount": round(rng.uniform(5, 500), 2),
                    "status": rng.choice(["paid", "paid", "shipped", "cancelled"]),
                },
            )
        await orders.flush()
    print(f"wrote {n} orders through {edge}")


async def run_job(query_dag: str) -> None:
    async with QueryDagClient(query_dag, timeout=60) as dag:
        print("\nplan:\n" + await dag.explain("orders", job=JOB))
        batches = [b async for b in dag.run_job("orders", JOB, job_id="revenue-by-region")]
        print("\nrevenue by region (cancelled orders left out):")
        for _, row in concat_batches(batches).rows():
            print(
                f"  {row['region']:>6}: {row['__count']:5d} orders, "
                f"{row['__sum_amount']:10.2f} total, {row['__avg_amount']:7.2f} average, "
                f"{row['__count_distinct_customer']:3d} customers"
            )
        status = await dag.status("revenue-by-region")
        print(
            f"\njob {status.job_id}: {status.state} in {status.elapsed_ms:.1f} ms, "
            f"{status.rows_scanned} rows scanned"
        )
        for v in status.vertices:
            print(
                f"  {v.name:>10} ({v.kind}): {v.rows_in:6d} rows in, {v.rows_out:6d} out, "
                f"{v.busy_ms:6.2f} ms busy"
            )


def main() -> None:
    p = argparse.ArgumentParser(description="Run an aggregation job on TopGun-py's query_dag.")
    p.add_argument(
        "--edge", help="WebSocket URL of a running edge (make up: ws://127.0.0.1:8080/ws)"
    )
    p.add_argument("--query-dag", help="host:port of the running query_dag service")
    p.add_argument("--orders", type=int, default=2000)
    args = p.parse_args()
    proc = None
    edge, query_dag = args.edge, args.query_dag
    if not (edge and query_dag):
        proc, edge, query_dag = start_up()
    try:
        asyncio.run(write_orders(edge, args.orders))
        asyncio.run(run_job(query_dag))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
