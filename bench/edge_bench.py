"""Edge benchmark: the whole system (edge + storage nodes) driven over WebSocket, figures as JSON.

    .venv/bin/python bench/edge_bench.py                 # starts `python -m services.up` itself
    .venv/bin/python bench/edge_bench.py --url ws://127.0.0.1:8080/ws   # against a running system

Measures acknowledged writes/s from 1 and from 20 WebSocket clients with OP_BATCH of 1 and of 100
ops (each client keeps a window of frames in flight), lock-step writes/s (one client, one
CLIENT_OP at a time, each waiting for its OP_ACK), write-ack latency p50/p99 at a paced
1,000 ops/s, live-query update latency p50/p99 (a write on one client -> QUERY_UPDATE on another),
and the time a fresh client needs to pull a 100,000-record map through Merkle sync.

``--no-search`` / ``--no-query-dag`` launch the system without those services (edge + storage
only). CPU per op is reported per process kind (``?`` is NATS) and for the bench client itself,
which shares the machine's cores.

When it starts the system itself it uses the launcher's defaults (SQLite in a temporary data
directory) with the per-connection rate limit raised, since one connection would otherwise be
capped at 20,000 ops/s by design.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.processes import start_service  # noqa: E402
from tests.support.wsclient import WsClient, make_token, payload  # noqa: E402

NODE = "bench-node"


class CpuMeter:
    """CPU seconds used by the system's processes (the launcher's children), from /proc."""

    def __init__(self, root_pid: int | None) -> None:
        self.pids: dict[int, str] = {}
        if root_pid is not None:
            for pid in _children(root_pid):
                with contextlib.suppress(OSError):
                    self.pids[pid] = _cmd_name(pid)

    def sample(self) -> dict[str, float]:
        out: dict[str, float] = {}
        tick = os.sysconf("SC_CLK_TCK")
        for pid, name in self.pids.items():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
        if self.pids:
            t = os.times()
            out["bench_client"] = t.user + t.system
        return out


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out += [int(x) for x in (task / "children").read_text().split()]
    return out


def _cmd_name(pid: int) -> str:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    mod = args[args.index(b"-m") + 1].decode() if b"-m" in args else "?"
    if b"--node-id" in args:
        return "storage"
    return mod.rsplit(".", 1)[-1]


CPU = CpuMeter(None)


def cpu_delta(before: dict[str, float], ops: int) -> dict[str, float]:
    after = CPU.sample()
    return {
        f"{k}_cpu_us_per_op": round((after.get(k, 0.0) - v) * 1e6 / max(ops, 1), 1)
        for k, v in before.items()
    }


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


class Writer:
    """One connection writing pre-encoded OP_BATCH frames with a window of frames in flight."""

    def __init__(self, client: WsClient, name: str, batch: int) -> None:
        self.c = client
        self.name = name
        self.batch = batch
        self.seq = 0
        self.acked_ops = 0
        self.latencies: list[float] = []

    def frame(self, map_name: str) -> tuple[str, bytes]:
        now = int(time.time() * 1000)
        ops = []
        for _ in range(self.batch):
            self.seq += 1
            ts = {"millis": now, "counter": self.seq, "nodeId": NODE}
            ops.append(
                {
                    "id": str(self.seq),
                    "mapName": map_name,
                    "opType": "PUT",
                    "key": f"{self.name}-{self.seq}",
                    "record": {
                        "value": {"n": self.seq, "owner": self.name, "ok": True},
                        "timestamp": ts,
                    },
                }
            )
        return str(self.seq), msgpack.packb({"type": "OP_BATCH", "payload": {"ops": ops}})

    async def run_window(self, map_name: str, window: int, until: float) -> None:
        pending: dict[str, float] = {}
        done = asyncio.Event()

        async def reader() -> None:
            while True:
                m = await self.c.expect("OP_ACK", 30)
                last = payload(m)["lastId"]
                sent = pending.pop(last, None)
                if sent is not None:
                    self.acked_ops += self.batch
                    self.latencies.append(time.perf_counter() - sent)
                if not pending and time.perf_counter() >= until:
                    done.set()
                    return
                refill.set()

        refill = asyncio.Event()
        rt = asyncio.create_task(reader())
        try:
            while time.perf_counter() < until:
                while len(pending) < window and time.perf_counter() < until:
                    last, data = self.frame(map_name)
                    pending[last] = time.perf_counter()
                    await self.c.send_bytes(data)
                refill.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(refill.wait(), 5)
            if pending:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), 30)
        finally:
            rt.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await rt

    async def run_paced(self, map_name: str, rate: float, until: float) -> None:
        """One single-op frame every 1/rate s; latency of each ack."""
        pending: dict[str, float] = {}

        async def reader() -> None:
            while True:
                m = await self.c.expect("OP_ACK", 30)
                sent = pending.pop(payload(m)["lastId"], None)
                if sent is not None:
                    self.latencies.append(time.perf_counter() - sent)
                    self.acked_ops += 1

        rt = asyncio.create_task(reader())
        interval = 1.0 / rate
        nxt = time.perf_counter()
        try:
            while nxt < until:
                last, data = self.frame(map_name)
                pending[last] = time.perf_counter()
                await self.c.send_bytes(data)
                nxt += interval
                delay = nxt - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            deadline = time.perf_counter() + 10
            while pending and time.perf_counter() < deadline:
                await asyncio.sleep(0.01)
        finally:
            rt.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await rt


async def connect(url: str, n: int) -> list[WsClient]:
    return list(
        await asyncio.gather(
            *(WsClient.connect(url, token=make_token(f"bench-{i}")) for i in range(n))
        )
    )


async def throughput(
    url: str, clients: int, batch: int, seconds: float, window: int
) -> dict[str, Any]:
    cs = await connect(url, clients)
    try:
        writers = [Writer(c, f"w{clients}x{batch}-{i}", batch) for i, c in enumerate(cs)]
        # warm-up
        await asyncio.gather(
            *(w.run_window("bench-warm", 2, time.perf_counter() + 0.5) for w in writers)
        )
        for w in writers:
            w.acked_ops, w.latencies = 0, []
        cpu0 = CPU.sample()
        t0 = time.perf_counter()
        await asyncio.gather(
            *(w.run_window(f"bench-{clients}x{batch}", window, t0 + seconds) for w in writers)
        )
        elapsed = time.perf_counter() - t0
        ops = sum(w.acked_ops for w in writers)
        lat = [x for w in writers for x in w.latencies]
        return {
            "clients": clients,
            "ops_per_frame": batch,
            "frames_in_flight_per_client": window,
            "seconds": round(elapsed, 2),
            "acked_ops": ops,
            "acked_ops_per_s": round(ops / elapsed),
            "frame_ack_p50_ms": round(pct(lat, 0.5) * 1000, 2),
            "frame_ack_p99_ms": round(pct(lat, 0.99) * 1000, 2),
            **cpu_delta(cpu0, ops),
        }
    finally:
        await asyncio.gather(*(c.close() for c in cs))


async def paced_latency(
    url: str, total_rate: float, clients: int, seconds: float
) -> dict[str, Any]:
    cs = await connect(url, clients)
    try:
        writers = [Writer(c, f"paced-{i}", 1) for i, c in enumerate(cs)]
        t0 = time.perf_counter()
        await asyncio.gather(
            *(w.run_paced("bench-paced", total_rate / clients, t0 + seconds) for w in writers)
        )
        lat = [x for w in writers for x in w.latencies]
        return {
            "target_ops_per_s": total_rate,
            "clients": clients,
            "acked_ops": len(lat),
            "write_ack_p50_ms": round(pct(lat, 0.5) * 1000, 2),
            "write_ack_p99_ms": round(pct(lat, 0.99) * 1000, 2),
            "write_ack_max_ms": round(max(lat) * 1000, 2) if lat else None,
        }
    finally:
        await asyncio.gather(*(c.close() for c in cs))


async def lockstep(url: str, seconds: float) -> dict[str, Any]:
    """One client, one CLIENT_OP at a time: each write waits for its OP_ACK before the next."""
    (c,) = await connect(url, 1)
    try:
        lat: list[float] = []
        seq = 0
        cpu0 = CPU.sample()
        t0 = time.perf_counter()
        until = t0 + seconds
        while time.perf_counter() < until:
            seq += 1
            op = {
                "id": f"ls-{seq}",
                "mapName": "bench-lockstep",
                "opType": "PUT",
                "key": f"ls-{seq}",
                "record": {
                    "value": {"n": seq},
                    "timestamp": {"millis": int(time.time() * 1000), "counter": 0, "nodeId": NODE},
                },
            }
            sent = time.perf_counter()
            await c.send_bytes(msgpack.packb({"type": "CLIENT_OP", "payload": op}))
            await c.expect("OP_ACK", 10, lastId=op["id"])
            lat.append(time.perf_counter() - sent)
        elapsed = time.perf_counter() - t0
        return {
            "acked_ops": len(lat),
            "acked_ops_per_s": round(len(lat) / elapsed),
            "write_ack_p50_ms": round(pct(lat, 0.5) * 1000, 2),
            "write_ack_p99_ms": round(pct(lat, 0.99) * 1000, 2),
            **cpu_delta(cpu0, len(lat)),
        }
    finally:
        await c.close()


async def live_query_latency(url: str, updates: int, rate: float) -> dict[str, Any]:
    writer, watcher = await connect(url, 2)
    try:
        map_name = f"bench-live-{os.getpid()}"
        qid, _ = await watcher.subscribe(
            map_name, {"predicate": {"op": "gte", "attribute": "n", "value": 0}}
        )
        sent: dict[str, float] = {}
        lat: list[float] = []
        interval = 1.0 / rate
        w = Writer(writer, "live", 1)
        for _i in range(updates):
            last, data = w.frame(map_name)
            key = f"live-{last}"
            sent[key] = time.perf_counter()
            await writer.send_bytes(data)
            m = await watcher.expect("QUERY_UPDATE", 10, queryId=qid)
            lat.append(time.perf_counter() - sent[payload(m)["key"]])
            await writer.expect("OP_ACK", 10)
            await asyncio.sleep(max(0.0, interval - lat[-1]))
        return {
            "updates": updates,
            "update_p50_ms": round(pct(lat, 0.5) * 1000, 2),
            "update_p99_ms": round(pct(lat, 0.99) * 1000, 2),
        }
    finally:
        await writer.close()
        await watcher.close()


async def cold_sync(url: str, records: int) -> dict[str, Any]:
    map_name = f"bench-sync-{os.getpid()}"
    loaders = await connect(url, 4)
    try:
        t0 = time.perf_counter()
        per = records // len(loaders)

        async def load(c: WsClient, idx: int) -> None:
            w = Writer(c, f"s{idx}", 1000)
            written = 0
            while written < per:
                last, data = w.frame(map_name)
                await c.send_bytes(data)
                await c.expect("OP_ACK", 30, lastId=last)
                written += 1000

        await asyncio.gather(*(load(c, i) for i, c in enumerate(loaders)))
        load_s = time.perf_counter() - t0
    finally:
        await asyncio.gather(*(c.close() for c in loaders))
    fresh = await WsClient.connect(
        url, token=make_token("bench-sync"), max_msg_size=256 * 1024 * 1024
    )
    try:
        cpu0 = CPU.sample()
        t0 = time.perf_counter()
        walk = await fresh.merkle_walk(map_name, timeout=120)
        elapsed = time.perf_counter() - t0
        cpu = {k.replace("_per_op", "_per_record"): v for k, v in cpu_delta(cpu0, records).items()}
    finally:
        await fresh.close()
    return {
        "records": records,
        "load_seconds": round(load_s, 2),
        "records_pulled": len(walk.records),
        "requests": walk.requests,
        "cold_sync_seconds": round(elapsed, 2),
        **cpu,
    }


async def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"url": url}
    s = args.seconds
    only = (
        set(args.only.split(","))
        if args.only
        else {"throughput", "lockstep", "latency", "live", "sync"}
    )
    if "throughput" in only:
        out["throughput"] = [
            await throughput(url, 1, 1, s, 32),
            await throughput(url, 1, 100, s, 8),
            await throughput(url, 20, 1, s, 8),
            await throughput(url, 20, 100, s, 4),
        ]
    if "lockstep" in only:
        out["lockstep_client_op"] = await lockstep(url, s)
    if "latency" in only:
        out["write_ack_latency_at_1k_ops"] = await paced_latency(url, 1000, 10, s)
    if "live" in only:
        out["live_query_update_latency"] = await live_query_latency(url, 300, 200)
    if "sync" in only:
        out["cold_merkle_sync"] = await cold_sync(url, args.sync_records)
    return out


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--url", default="", help="an already running edge; default: start make-up's launcher"
    )
    p.add_argument("--seconds", type=float, default=5.0, help="per throughput run")
    p.add_argument("--sync-records", type=int, default=100_000)
    p.add_argument("--storage", default="sqlite", help="storage of the launched system")
    p.add_argument("--only", default="", help="comma list: throughput,lockstep,latency,live,sync")
    p.add_argument("--no-search", action="store_true", help="launch without the search service")
    p.add_argument(
        "--no-query-dag", action="store_true", help="launch without the query DAG service"
    )
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
        env = {
            "TOPGUN_RATE_OPS": "100000000",
            "TOPGUN_RATE_BURST": "100000000",
            "TOPGUN_LOG_LEVEL": "WARNING",
            "JWT_SECRET": "test-e2e-secret",
        }
        env.pop("TOPGUN_NO_AUTH", None)
        svc = start_service(
            "services.up",
            ["--port", "0", "--storage", args.storage, "--data-dir", data]
            + (["--no-search"] if args.no_search else [])
            + (["--no-query-dag"] if args.no_query_dag else []),
            env=env,
            ready_timeout=90,
        )
        try:
            global CPU
            CPU = CpuMeter(svc.proc.pid)
            url = f"ws://127.0.0.1:{svc.port}/ws"
            result = asyncio.run(run(url, args))
            result["system"] = {
                "storage": args.storage,
                "storage_nodes": 3,
                "edges": 1,
                "search": not args.no_search,
                "query_dag": not args.no_query_dag,
                "cores": os.cpu_count(),
            }
            print(json.dumps(result, indent=2))
        finally:
            svc.stop()
            with contextlib.suppress(subprocess.TimeoutExpired):
                svc.proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
