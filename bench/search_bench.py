"""Search benchmark: 100,000 documents of ~20 words through the whole system, figures as JSON.

    .venv/bin/python bench/search_bench.py                  # 3 SQLite storage nodes, disk index
    .venv/bin/python bench/search_bench.py --docs 20000 --storage memory

It starts storage nodes (a static cluster), the search service (tantivy on disk in a temporary
folder) and the edge (no-auth, the per-connection rate limit raised), then measures:

* indexing: 100k documents written over one WebSocket as OP_BATCHes of 500 (8 in flight) until
  every one is searchable (the search service's Status counts committed documents); the search
  process's CPU per document;
* write-to-searchable latency at a sustained 2,000 writes/s for 10 s (batches of 20 every 10 ms)
  on the 100k index: two probers keep taking the newest write and searching for a word only it
  carries (every 10 ms, straight at the search service) until it is found;
* write-to-live-ENTER latency, the same load with a live search (on another connection) that
  every written document matches: the time from a write to its SEARCH_UPDATE ENTER. This also
  loads the live path with 2,000 updates/s;
* query latency p50/p99 for one-term, two-term and phrase queries through the edge (SEARCH ->
  SEARCH_RESP, top 10 with values, lock-step on one connection, 20 different queries per kind);
* the same queries in-process against the same 100k documents: raw tantivy (a prebuilt query,
  top 10, stored documents fetched) as the near-limit baseline, and the service's own path
  (parse, plan, search, matched terms, values) without the network.

The corpus is synthetic: a 20,000-word vocabulary with Zipf-distributed word frequencies
(s = 1.1), each document a 5-word title and a 15-word body.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tantivy  # noqa: E402

from libs.search_client import SearchClient  # noqa: E402
from libs.search_client import SearchOptions as ClientOptions  # noqa: E402
from services.search.index import MapIndex  # noqa: E402
from services.search.mapspec import MapSpec  # noqa: E402
from services.search.plan import SearchOptions, build_plan  # noqa: E402
from services.search.query import parse_query  # noqa: E402
from tests.support.processes import ServiceProcess, free_port, start_service  # noqa: E402

MAP = "docs"
PROBE_WORD = "latencyprobe"
NODE = "bench"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def ms(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(pct(values, 0.50) * 1000, 3),
        "p99_ms": round(pct(values, 0.99) * 1000, 3),
        "mean_ms": round(statistics.fmean(values) * 1000, 3) if values else float("nan"),
        "samples": len(values),
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- corpus ---------------------------------------------------------------------------------------


def vocabulary(n: int, rng: np.random.Generator) -> list[str]:
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"]
    words: dict[str, None] = {}
    while len(words) < n:
        k = int(rng.integers(2, 5))
        words["".join(syllables[int(i)] for i in rng.integers(0, len(syllables), k))] = None
    return list(words)


def corpus(n_docs: int, seed: int = 7) -> tuple[list[str], list[dict[str, str]]]:
    rng = np.random.default_rng(seed)
    vocab = vocabulary(20_000, rng)
    ranks = np.arange(1, len(vocab) + 1, dtype=np.float64)
    p = 1.0 / ranks**1.1
    p /= p.sum()
    picks = rng.choice(len(vocab), size=(n_docs, 20), p=p)
    docs = [
        {
            "title": " ".join(vocab[i] for i in row[:5]),
            "body": " ".join(vocab[i] for i in row[5:]),
        }
        for row in picks.tolist()
    ]
    return vocab, docs


def queries(vocab: list[str], docs: list[dict[str, str]]) -> dict[str, list[str]]:
    rng = np.random.default_rng(11)
    phrases = []
    for i in rng.choice(len(docs), 20, replace=False).tolist():
        words = docs[i]["body"].split()
        phrases.append(f'"{words[3]} {words[4]}"')
    return {
        "one_term": [vocab[100 + i] for i in range(20)],
        "two_term": [f"{vocab[50 + i]} {vocab[300 + i]}" for i in range(20)],
        "phrase": phrases,
    }


# --- the system -----------------------------------------------------------------------------------


class System:
    def __init__(
        self, data_dir: Path, storage: str, nodes: int, index: str = "disk", log_level: str = "INFO"
    ) -> None:
        self.data_dir = data_dir
        self.procs: list[ServiceProcess] = []
        ports = {f"n{i + 1}": free_port() for i in range(nodes)}
        peers = ",".join(f"{n}=127.0.0.1:{p}" for n, p in ports.items())
        for n, port in ports.items():
            self.procs.append(
                start_service(
                    "services.storage",
                    [
                        "--node-id",
                        n,
                        "--port",
                        str(port),
                        "--peers",
                        peers,
                        "--storage",
                        storage,
                        "--data-dir",
                        str(data_dir),
                    ],
                )
            )
        storage_nodes = ",".join(f"{n}=127.0.0.1:{p}" for n, p in ports.items())
        self.search = start_service(
            "services.search",
            [
                "--port",
                "0",
                "--storage-nodes",
                storage_nodes,
                "--backend",
                index,
                "--log-level",
                log_level,
                "--data-dir",
                str(data_dir / "search"),
            ],
        )
        self.procs.append(self.search)
        self.edge = start_service(
            "services.edge",
            [
                "--port",
                "0",
                "--no-auth",
                "--storage-nodes",
                storage_nodes,
                "--search",
                self.search.address,
            ],
            env={"TOPGUN_RATE_OPS": "10000000", "TOPGUN_RATE_BURST": "10000000"},
        )
        self.procs.append(self.edge)

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far, per kind of process."""
        out: dict[str, float] = {}
        for p in self.procs:
            kind = p.args[p.args.index("-m") + 1].rsplit(".", 1)[-1]
            with contextlib.suppress(OSError):
                out[kind] = out.get(kind, 0.0) + cpu_seconds(p.proc.pid)
        return out

    def cpu_per(self, before: dict[str, float], n: int) -> dict[str, float]:
        after = self.cpu()
        return {
            f"{k}_cpu_us_per_write": round((after[k] - v) * 1e6 / n, 1) for k, v in before.items()
        }

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.edge.port}/ws"

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


class Conn:
    """A raw no-auth WebSocket connection; arriving messages are timestamped and routed."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http = http
        self.ws = ws
        self.waiters: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}
        self.updates: list[tuple[float, dict[str, Any]]] = []
        self.acks: asyncio.Queue[str] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str) -> Conn:
        http = aiohttp.ClientSession()
        ws = await http.ws_connect(url, max_msg_size=64 << 20)
        return cls(http, ws)

    async def _read(self) -> None:
        async for frame in self.ws:
            if frame.type != aiohttp.WSMsgType.BINARY:
                continue
            now = time.perf_counter()
            m = msgpack.unpackb(frame.data, raw=False, strict_map_key=False)
            t, body = m.get("type"), m.get("payload") or {}
            if t == "OP_ACK":
                self.acks.put_nowait(body.get("lastId"))
            elif t == "SEARCH_UPDATE":
                self.updates.append((now, body))
            elif t == "SEARCH_RESP":
                fut = self.waiters.pop(("SEARCH_RESP", body.get("requestId")), None)
                if fut is not None and not fut.done():
                    fut.set_result(body)

    async def request(self, msg: dict[str, Any], rid: str) -> dict[str, Any]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiters[("SEARCH_RESP", rid)] = fut
        await self.ws.send_bytes(msgpack.packb(msg))
        return await asyncio.wait_for(fut, 30)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.reader
        await self.http.close()


def op_batch(items: list[tuple[str, dict[str, str]]], first_id: int) -> tuple[str, bytes]:
    now = int(time.time() * 1000)
    ops = []
    for i, (key, value) in enumerate(items):
        oid = str(first_id + i)
        ts = {"millis": now, "counter": first_id + i, "nodeId": NODE}
        ops.append(
            {
                "id": oid,
                "mapName": MAP,
                "opType": "PUT",
                "key": key,
                "record": {"value": value, "timestamp": ts},
            }
        )
    return ops[-1]["id"], msgpack.packb({"type": "OP_BATCH", "payload": {"ops": ops}})


# --- phases ---------------------------------------------------------------------------------------


async def phase_indexing(
    system: System, docs: list[dict[str, str]], batch: int = 500, window: int = 8
) -> dict[str, Any]:
    conn = await Conn.open(system.url)
    sc = SearchClient(system.search.address)
    n = len(docs)
    cpu0 = cpu_seconds(system.search.proc.pid)
    t0 = time.perf_counter()
    in_flight = 0
    next_id = 1
    try:
        for start in range(0, n, batch):
            items = [(f"d{i}", docs[i]) for i in range(start, min(n, start + batch))]
            _, frame = op_batch(items, next_id)
            next_id += len(items)
            await conn.ws.send_bytes(frame)
            in_flight += 1
            while in_flight >= window:
                await asyncio.wait_for(conn.acks.get(), 60)
                in_flight -= 1
        while in_flight:
            await asyncio.wait_for(conn.acks.get(), 60)
            in_flight -= 1
        t_acked = time.perf_counter()
        deadline = t_acked + 300
        while (await sc.status()).documents.get(MAP, 0) < n:
            assert time.perf_counter() < deadline, "documents never all became searchable"
            await asyncio.sleep(0.01)
        t_done = time.perf_counter()
        cpu = cpu_seconds(system.search.proc.pid) - cpu0
        return {
            "documents": n,
            "acked_writes_per_s": round(n / (t_acked - t0)),
            "searchable_docs_per_s": round(n / (t_done - t0)),
            "seconds_to_all_searchable": round(t_done - t0, 2),
            "index_lag_after_last_ack_s": round(t_done - t_acked, 2),
            "search_cpu_us_per_doc": round(cpu * 1e6 / n, 1),
        }
    finally:
        await conn.close()
        await sc.close()


async def paced_writes(
    conn: Conn,
    vocab: list[str],
    sent: dict[str, float],
    tag: str,
    rate: int,
    seconds: float,
    per_tick: int = 20,
) -> None:
    """Write ``rate`` documents/s for ``seconds`` (a batch of ``per_tick`` every tick); each carries
    the probe word and a word of its own, ``<tag>u<n>``; ``sent`` gets each key's send time."""
    rng = np.random.default_rng(5)
    interval = per_tick / rate
    nxt = time.perf_counter()
    next_id = 10_000_000 + len(sent)
    n = len(sent)
    for _ in range(int(seconds / interval)):
        items = []
        for _ in range(per_tick):
            n += 1
            words = " ".join(vocab[int(i)] for i in rng.integers(0, 2000, 17))
            body = f"{tag}u{n} {words}"
            items.append((f"{tag}-{n}", {"title": f"{PROBE_WORD} {words[:40]}", "body": body}))
        _, frame = op_batch(items, next_id)
        next_id += per_tick
        now = time.perf_counter()
        for key, _ in items:
            sent[key] = now
        await conn.ws.send_bytes(frame)
        nxt += interval
        delay = nxt - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)


async def phase_searchable(
    system: System, vocab: list[str], rate: int = 2000, seconds: float = 10.0, probers: int = 2
) -> dict[str, Any]:
    """Sustained writes; probers keep picking the newest write and searching for its own word
    (straight at the search service, every 10 ms) until it is found."""
    writer = await Conn.open(system.url)
    sc = SearchClient(system.search.address)
    sent: dict[str, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            if not sent:
                await asyncio.sleep(0.005)
                continue
            key = next(reversed(sent))
            word = f"sbu{key.rsplit('-', 1)[1]}"
            t_sent = sent[key]
            while not await sc.search(MAP, word, ClientOptions(include_value=False)):
                await asyncio.sleep(0.01)
            latencies.append(time.perf_counter() - t_sent)

    acker = asyncio.create_task(_drain_acks(writer))
    tasks = [asyncio.create_task(probe()) for _ in range(probers)]
    cpu0 = system.cpu()
    try:
        await paced_writes(writer, vocab, sent, "sb", rate, seconds)
        done.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        return {
            "offered_writes_per_s": rate,
            "writes": len(sent),
            **ms(latencies),
            **system.cpu_per(cpu0, len(sent)),
        }
    finally:
        for t in [*tasks, acker]:
            t.cancel()
        await writer.close()
        await sc.close()


async def phase_live_enter(
    system: System, vocab: list[str], rate: int = 2000, seconds: float = 10.0
) -> dict[str, Any]:
    """Sustained writes, every one matching a live search on another connection: the time from
    a write to its SEARCH_UPDATE ENTER (searchable, then pushed)."""
    writer = await Conn.open(system.url)
    watcher = await Conn.open(system.url)
    sc = SearchClient(system.search.address)
    try:
        # start from a settled index: earlier writes still being committed would ENTER too
        settled = -1
        while (docs := (await sc.status()).documents.get(MAP, 0)) != settled:
            settled = docs
            await asyncio.sleep(0.5)
        sub = {"subscriptionId": "probe", "mapName": MAP, "query": PROBE_WORD}
        first = await watcher.request({"type": "SEARCH_SUB", "payload": sub}, "probe")
        assert not first.get("error"), first
        watcher.updates.clear()
        sent: dict[str, float] = {}
        acker = asyncio.create_task(_drain_acks(writer))
        cpu0 = system.cpu()
        await paced_writes(writer, vocab, sent, "le", rate, seconds)
        deadline = time.perf_counter() + 60
        entered: dict[str, float] = {}
        while len(entered) < len(sent) and time.perf_counter() < deadline:
            await asyncio.sleep(0.02)
            entered = {
                u["key"]: at
                for at, u in watcher.updates
                if u.get("changeType") == "ENTER" and u["key"] in sent
            }
        acker.cancel()
        cpu = system.cpu_per(cpu0, len(sent))
        latencies = [at - sent[key] for key, at in entered.items()]
        return {
            "offered_writes_per_s": rate,
            "writes": len(sent),
            "entered": len(latencies),
            **ms(latencies),
            **cpu,
        }
    finally:
        await writer.close()
        await watcher.close()
        await sc.close()


async def _drain_acks(conn: Conn) -> None:
    while True:
        await conn.acks.get()


async def phase_queries_edge(
    system: System, qs: dict[str, list[str]], rounds: int
) -> dict[str, Any]:
    conn = await Conn.open(system.url)
    out: dict[str, Any] = {}
    try:
        rid = 0
        for kind, texts in qs.items():
            lat: list[float] = []
            hits: list[int] = []
            for r in range(rounds + 20):
                rid += 1
                q = texts[r % len(texts)]
                msg = {
                    "type": "SEARCH",
                    "payload": {"requestId": str(rid), "mapName": MAP, "query": q},
                }
                t = time.perf_counter()
                resp = await conn.request(msg, str(rid))
                if r >= 20:  # warm-up
                    lat.append(time.perf_counter() - t)
                    hits.append(len(resp["results"]))
            out[kind] = {**ms(lat), "mean_results": round(statistics.fmean(hits), 1)}
    finally:
        await conn.close()
    return out


def phase_queries_in_process(
    docs: list[dict[str, str]], qs: dict[str, list[str]], rounds: int
) -> dict[str, Any]:
    idx = MapIndex("bench", MapSpec())
    t0 = time.perf_counter()
    for i, d in enumerate(docs):
        idx.upsert(f"d{i}", msgpack.packb(d), fresh=True)
    idx.commit()
    build_s = time.perf_counter() - t0
    schema = idx.schema
    out: dict[str, Any] = {"index_build_docs_per_s": round(len(docs) / build_s)}
    opts = SearchOptions()
    for kind, texts in qs.items():
        plans = [build_plan(parse_query(q), schema, idx.field_targets, opts) for q in texts]
        raw = [p.query for p in plans]
        searcher = idx._searcher
        lat_raw: list[float] = []
        lat_service: list[float] = []
        for r in range(rounds + 20):
            q = raw[r % len(raw)]
            assert q is not None
            t = time.perf_counter()
            for _, addr in searcher.search(q, 10, count=False).hits:
                searcher.doc(addr)
            el = time.perf_counter() - t
            if r >= 20:
                lat_raw.append(el)
        for r in range(rounds + 20):
            text = texts[r % len(texts)]
            t = time.perf_counter()
            plan = build_plan(parse_query(text), schema, idx.field_targets, opts)
            idx.search(plan, opts)
            el = time.perf_counter() - t
            if r >= 20:
                lat_service.append(el)
        out[kind] = {"tantivy": ms(lat_raw), "service_path": ms(lat_service)}
    idx.close()
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    vocab, docs = corpus(args.docs)
    qs = queries(vocab, docs)
    result: dict[str, Any] = {
        "benchmark": "search",
        "documents": args.docs,
        "words_per_document": 20,
        "storage": f"{args.nodes} nodes, {args.storage}",
        "search_index": f"tantivy, {args.index}",
        "tantivy_version": tantivy.__version__,
        "cpus": os.cpu_count(),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
    }
    with tempfile.TemporaryDirectory(prefix="search-bench-") as tmp:
        system = System(Path(tmp), args.storage, args.nodes, args.index, args.search_log_level)
        try:
            result["indexing"] = await phase_indexing(system, docs)
            result["write_to_searchable"] = await phase_searchable(system, vocab)
            result["write_to_live_enter"] = await phase_live_enter(system, vocab)
            result["query_through_edge"] = await phase_queries_edge(system, qs, args.rounds)
        finally:
            system.stop()
    result["query_in_process"] = phase_queries_in_process(docs, qs, args.rounds)
    ratios = {}
    for kind in qs:
        edge_p99 = result["query_through_edge"][kind]["p99_ms"]
        ratios[kind] = {
            "edge_p99_over_tantivy_p99": round(
                edge_p99 / result["query_in_process"][kind]["tantivy"]["p99_ms"], 1
            ),
            "edge_p99_over_service_path_p99": round(
                edge_p99 / result["query_in_process"][kind]["service_path"]["p99_ms"], 1
            ),
        }
    result["query_p99_ratios"] = ratios
    result["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=100_000)
    p.add_argument("--storage", default="sqlite", help="sqlite (make up's default) or memory")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--index", choices=("disk", "memory"), default="disk", help="search backend")
    p.add_argument("--rounds", type=int, default=500, help="queries per kind")
    p.add_argument("--search-log-level", default="INFO", help="DEBUG logs every commit")
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
