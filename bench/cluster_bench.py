"""Cluster benchmark: failover, migration and scale-out of real processes on loopback, as JSON.

    .venv/bin/python bench/cluster_bench.py                  # everything
    .venv/bin/python bench/cluster_bench.py --only failover  # failover | migration | throughput

Each part starts its own system: one NATS server (JetStream, the coordination store), storage
nodes (``python -m services.storage --nats ...``, in-memory store) and one edge in front of them.

- failover (member TTL 2 s, as in the tests): three storage nodes under a steady stream of
  REPLICATED writes from one client; five times, a storage node is SIGKILLed and the time until
  the first REPLICATED acknowledgement of a write sent after the kill to one of the partitions it
  owned is measured (p50/max), then the node is restarted and rejoins. At the end every
  acknowledged write is looked up on its owner: acknowledged writes lost (must be 0).
- migration: 100,000 records in a three-node cluster, then a fourth node joins; seconds from the
  joiner's start until the table is settled again (it owns its share, nothing migrating).
- throughput: acknowledged writes/s from 4 WebSocket clients (OP_BATCH of 100, 4 frames in
  flight each) with 1, 2 and 3 storage nodes behind one edge, for APPLIED and REPLICATED.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp
import msgpack

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from libs.cluster import NatsServer, start_nats_server  # noqa: E402
from libs.crdt.hashing import partition_of, partitions_of  # noqa: E402
from libs.storage_client import (  # noqa: E402
    PUT,
    OpBatchBuilder,
    StorageClient,
    WriteConcern,
)
from tests.support.processes import ServiceProcess, free_port, start_service  # noqa: E402
from tests.support.wsclient import WsClient, payload  # noqa: E402

NODE = "bench-client"


class System:
    """NATS + storage nodes + one edge, all owned by this object."""

    def __init__(self, root: Path, member_ttl: float) -> None:
        self.root = root
        self.member_ttl = member_ttl
        self.nats: NatsServer | None = None
        self.storage: dict[str, ServiceProcess] = {}
        self.edge: ServiceProcess | None = None

    def env(self) -> dict[str, str]:
        return {"TOPGUN_MEMBER_TTL": str(self.member_ttl), "TOPGUN_LOG_LEVEL": "WARNING"}

    def start(self, nodes: int) -> None:
        self.nats = start_nats_server(port=free_port(), store_dir=self.root / "nats")
        for i in range(nodes):
            self.start_storage(f"s{i + 1}", expect=nodes)
        self.edge = start_service(
            "services.edge",
            ["--port", "0", "--no-auth", "--nats", self.nats.url, "--rate-ops", "10000000",
             "--rate-burst", "10000000"],
            env=self.env(),
            ready_timeout=90,
        )  # fmt: skip

    def start_storage(self, node: str, expect: int = 0) -> ServiceProcess:
        assert self.nats is not None
        args = ["--node-id", node, "--port", "0", "--storage", "memory", "--nats", self.nats.url]
        args += ["--data-dir", str(self.root)]
        if expect:
            args += ["--expect-members", str(expect)]
        proc = start_service("services.storage", args, env=self.env(), ready_timeout=90)
        self.storage[node] = proc
        return proc

    @property
    def url(self) -> str:
        assert self.edge is not None
        return f"ws://127.0.0.1:{self.edge.port}"

    async def status(self) -> dict[str, Any]:
        assert self.edge is not None
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{self.edge.port}/cluster") as r,
        ):
            return dict(await r.json())

    async def settled(self, nodes: set[str], timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                s = await self.status()
                if {p["owner"] for p in s["partitions"]} == nodes and not s["migrations"]:
                    backups = [len(p["backups"]) for p in s["partitions"]]
                    if len(nodes) == 1 or min(backups) == max(backups) == 1:
                        return s
            await asyncio.sleep(0.05)
        raise TimeoutError(f"cluster did not settle on {sorted(nodes)} within {timeout}s")

    def stop(self) -> None:
        if self.edge is not None:
            self.edge.stop()
        for p in self.storage.values():
            p.stop()
        if self.nats is not None:
            self.nats.stop()


def op(map_name: str, key: str, seq: int, now: int) -> dict[str, Any]:
    return {
        "id": str(seq),
        "mapName": map_name,
        "opType": "PUT",
        "key": key,
        "record": {
            "value": {"n": seq},
            "timestamp": {"millis": now, "counter": seq, "nodeId": NODE},
        },
    }


class WindowWriter:
    """One connection sending OP_BATCH frames with a window in flight; records acked keys."""

    def __init__(self, c: WsClient, name: str, batch: int, concern: str) -> None:
        self.c = c
        self.name = name
        self.batch = batch
        self.concern = concern
        self.seq = 0
        self.acked_ops = 0
        self.acked_keys: list[str] = []
        self.keep_keys = False
        self.errors = 0

    async def run(self, map_name: str, window: int, stop: asyncio.Event) -> None:
        pending: dict[str, list[str]] = {}
        room = asyncio.Event()

        async def reader() -> None:
            while True:
                m = await self.c.expect(lambda m: m.get("type") in ("OP_ACK", "ERROR"), 60)
                if m["type"] == "ERROR":
                    self.errors += 1
                    continue
                keys = pending.pop(payload(m)["lastId"], None)
                if keys is not None and payload(m)["achievedLevel"] in (self.concern, "PERSISTED"):
                    self.acked_ops += len(keys)
                    if self.keep_keys:
                        self.acked_keys.extend(keys)
                room.set()

        rt = asyncio.create_task(reader())
        try:
            while not stop.is_set():
                while len(pending) < window and not stop.is_set():
                    now = int(time.time() * 1000)
                    ops = []
                    for _ in range(self.batch):
                        self.seq += 1
                        ops.append(op(map_name, f"{self.name}-{self.seq}", self.seq, now))
                    pending[str(self.seq)] = [o["key"] for o in ops]
                    frame = {
                        "type": "OP_BATCH",
                        "payload": {"ops": ops, "writeConcern": self.concern},
                    }
                    await self.c.send_bytes(msgpack.packb(frame))
                room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(room.wait(), 1)
            deadline = time.monotonic() + 30
            while pending and time.monotonic() < deadline and not rt.done():
                await asyncio.sleep(0.02)
        finally:
            rt.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await rt


async def missing_keys(system: System, map_name: str, keys: list[str]) -> list[str]:
    """Keys of ``keys`` that their owner (in the current table) does not hold."""
    s = await system.status()
    owners = [p["owner"] for p in s["partitions"]]
    addresses = s["addresses"]
    parts = partitions_of(keys).tolist()
    by_owner: dict[str, list[str]] = {}
    for k, p in zip(keys, parts, strict=True):
        by_owner.setdefault(owners[p], []).append(k)
    missing: list[str] = []
    for owner, ks in by_owner.items():
        async with StorageClient(addresses[owner], timeout=30) as c:
            found = set()
            for i in range(0, len(ks), 5000):
                found.update(r.key for r in await c.get(map_name, ks[i : i + 5000]))
        missing.extend(k for k in ks if k not in found)
    return missing


def keys_in(partitions: Iterable[int], prefix: str, count: int) -> list[str]:
    wanted = set(partitions)
    out: list[str] = []
    i = 0
    while len(out) < count:
        k = f"{prefix}-{i}"
        if partition_of(k) in wanted:
            out.append(k)
        i += 1
    return out


# --- failover ------------------------------------------------------------------------------------


async def failover(root: Path, kills: int, member_ttl: float) -> dict[str, Any]:
    system = System(root / "failover", member_ttl)
    try:
        system.start(3)
        nodes = {"s1", "s2", "s3"}
        await system.settled(nodes)
        bg = WindowWriter(await WsClient.connect(system.url), "bg", 20, "REPLICATED")
        bg.keep_keys = True
        stop = asyncio.Event()
        bg_task = asyncio.create_task(bg.run("failover", 2, stop))
        probe = await WsClient.connect(system.url)
        times: list[float] = []
        seq = 0
        try:
            await asyncio.sleep(1.0)
            for i in range(kills):
                victim = f"s{i % 3 + 1}"
                s = await system.status()
                owned = [p["partition"] for p in s["partitions"] if p["owner"] == victim]
                probe_keys = keys_in(owned, f"probe{i}", 10)
                system.storage[victim].kill()
                killed = time.perf_counter()
                while True:  # the first REPLICATED ack of a write sent after the kill
                    now = int(time.time() * 1000)
                    ops = []
                    for k in probe_keys:
                        seq += 1
                        ops.append(op("failover-probe", k, seq, now))
                    await probe.send(
                        {"type": "OP_BATCH", "payload": {"ops": ops, "writeConcern": "REPLICATED"}}
                    )
                    m = await probe.expect(
                        lambda m, last=str(seq): (
                            m.get("type") == "ERROR"
                            or (m.get("type") == "OP_ACK" and payload(m)["lastId"] == last)
                        ),
                        60,
                    )
                    if m["type"] == "OP_ACK" and payload(m)["achievedLevel"] == "REPLICATED":
                        break
                times.append(time.perf_counter() - killed)
                system.start_storage(victim)
                await system.settled(nodes)
        finally:
            stop.set()
            await asyncio.wait_for(bg_task, 60)
            await probe.close()
            await bg.c.close()
        lost = await missing_keys(system, "failover", bg.acked_keys)
        return {
            "storage_nodes": 3,
            "member_ttl_s": member_ttl,
            "kills": kills,
            "first_replicated_ack_after_kill_p50_s": round(statistics.median(times), 2),
            "first_replicated_ack_after_kill_max_s": round(max(times), 2),
            "each_s": [round(t, 2) for t in times],
            "replicated_acked_writes": len(bg.acked_keys),
            "acked_writes_lost": len(lost),
        }
    finally:
        system.stop()


# --- migration -----------------------------------------------------------------------------------


async def migration(root: Path, records: int, member_ttl: float) -> dict[str, Any]:
    system = System(root / "migration", member_ttl)
    try:
        system.start(3)
        s = await system.settled({"s1", "s2", "s3"})
        owners = [p["owner"] for p in s["partitions"]]
        clients = {n: StorageClient(a, timeout=60) for n, a in s["addresses"].items()}
        t_load = time.perf_counter()
        value = msgpack.packb({"title": "a record of moderate size", "n": 1, "done": False})
        for start in range(0, records, 10_000):
            b = OpBatchBuilder()
            for i in range(start, min(records, start + 10_000)):
                b.append("moving", f"rec-{i}", PUT, 1_700_000_000_000 + i, 0, NODE, value)
            groups: dict[str, list[int]] = {}
            for idx, p in enumerate(b.partitions.tolist()):
                groups.setdefault(owners[p], []).append(idx)
            await asyncio.gather(
                *(
                    clients[o].apply(
                        b.select(ix), WriteConcern.REPLICATED, table_version=s["tableVersion"]
                    )
                    for o, ix in groups.items()
                )
            )
        load_s = time.perf_counter() - t_load
        for c in clients.values():
            await c.close()
        t0 = time.perf_counter()
        system.start_storage("s4")
        started = time.perf_counter() - t0
        after = await system.settled({"s1", "s2", "s3", "s4"})
        elapsed = time.perf_counter() - t0
        parts = [p for p in after["partitions"] if p["owner"] == "s4"]
        backed = [p for p in after["partitions"] if "s4" in p["backups"]]
        per_part = [0] * 271
        for p in partitions_of([f"rec-{i}" for i in range(records)]).tolist():
            per_part[p] += 1
        lost = await missing_keys(system, "moving", [f"rec-{i}" for i in range(records)])
        return {
            "records": records,
            "load_s": round(load_s, 2),
            "joiner_process_start_s": round(started, 2),
            "join_to_settled_s": round(elapsed, 2),
            "partitions_to_joiner_as_primary": len(parts),
            "partitions_to_joiner_as_backup": len(backed),
            "records_copied_to_joiner": sum(per_part[p["partition"]] for p in parts + backed),
            "records_lost": len(lost),
        }
    finally:
        system.stop()


# --- throughput ----------------------------------------------------------------------------------


async def throughput(root: Path, member_ttl: float, seconds: float) -> list[dict[str, Any]]:
    out = []
    for n in (1, 2, 3):
        system = System(root / f"tp{n}", member_ttl)
        try:
            system.start(n)
            await system.settled({f"s{i + 1}" for i in range(n)})
            for concern in ("APPLIED", "REPLICATED"):
                cs = [await WsClient.connect(system.url) for _ in range(4)]
                writers = [
                    WindowWriter(c, f"{concern}{n}-{i}", 100, concern) for i, c in enumerate(cs)
                ]
                warm = asyncio.Event()
                tasks = [asyncio.create_task(w.run("warm", 2, warm)) for w in writers]
                await asyncio.sleep(1.0)
                warm.set()
                await asyncio.gather(*tasks)
                for w in writers:
                    w.acked_ops = 0
                stop = asyncio.Event()
                t0 = time.perf_counter()
                tasks = [asyncio.create_task(w.run(f"tp-{concern}", 4, stop)) for w in writers]
                await asyncio.sleep(seconds)
                stop.set()
                await asyncio.gather(*tasks)
                elapsed = time.perf_counter() - t0
                ops = sum(w.acked_ops for w in writers)
                out.append(
                    {
                        "storage_nodes": n,
                        "write_concern": concern,
                        "acked_ops_per_s": round(ops / elapsed),
                        "seconds": round(elapsed, 2),
                    }
                )
                for c in cs:
                    await c.close()
        finally:
            system.stop()
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
    result: dict[str, Any] = {"machine_cores": __import__("os").cpu_count()}
    if args.only in (None, "failover"):
        result["failover"] = await failover(root, args.kills, args.failover_ttl)
    if args.only in (None, "migration"):
        result["migration"] = await migration(root, args.records, args.member_ttl)
    if args.only in (None, "throughput"):
        result["throughput"] = await throughput(root, args.member_ttl, args.seconds)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", choices=("failover", "migration", "throughput"))
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument(
        "--failover-ttl", type=float, default=2.0, help="member TTL of the failover part"
    )
    p.add_argument(
        "--member-ttl", type=float, default=3.0, help="member TTL of the other parts (default)"
    )
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
