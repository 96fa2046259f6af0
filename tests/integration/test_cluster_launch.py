"""A real cluster started the way TopGun's harness starts one: three launchers in parallel, each
with ``--node-id``, ``--cluster-port`` and the others' cluster ports as ``--seed-nodes``, in-memory
storage and no auth. Each launcher is one member (NATS server + storage node + edge).

A cluster client written here reads PARTITION_MAP and writes every key straight to the edge in
front of its owner; reads go through other members. Then the cluster changes under load: a fourth
member joins during sustained writes, a member is SIGKILLed (its whole process tree) during
sustained REPLICATED writes and is restarted on the same ports, and a paused storage node is
failed over and refuses writes when it wakes up. No acknowledged write may be lost.

The tests share one cluster and run in file order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from libs.crdt.hashing import partition_of
from libs.storage_client import PUT, OpBatchBuilder, OpStatus, StorageClient
from tests.support.processes import ServiceProcess, free_port, start_service
from tests.support.wsclient import WsClient, lww_put, payload

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MEMBER_TTL = "2"
ENV = {
    "STORAGE_BACKEND": "null",
    "TOPGUN_NO_AUTH": "true",
    "JWT_SECRET": "",
    "TOPGUN_MEMBER_TTL": MEMBER_TTL,
    "TOPGUN_LOG_LEVEL": os.environ.get("TEST_CLUSTER_LOG_LEVEL", "WARNING"),
}


@dataclass
class Member:
    node_id: str
    port: int
    cluster_port: int
    args: list[str]
    proc: ServiceProcess | None = None

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Cluster:
    data_dir: Path
    members: dict[str, Member] = field(default_factory=dict)

    def add(self, node_id: str, seeds: list[int]) -> Member:
        port, cport = free_port(), free_port()
        args = [
            "--port", str(port),
            "--node-id", node_id,
            "--cluster-port", str(cport),
            "--seed-nodes", ",".join(f"127.0.0.1:{p}" for p in seeds),
            "--data-dir", str(self.data_dir),
        ]  # fmt: skip
        m = Member(node_id, port, cport, args)
        self.members[node_id] = m
        return m

    def start(self, *members: Member) -> None:
        """Start launchers in parallel and wait for every PORT= line (each one that started is
        kept, so that ``stop_all`` stops it even when another failed)."""
        with ThreadPoolExecutor(len(members)) as pool:
            futures = [
                pool.submit(start_service, "services.up", m.args, env=ENV, ready_timeout=150)
                for m in members
            ]
            failures = []
            for m, fut in zip(members, futures, strict=True):
                try:
                    m.proc = fut.result()
                except Exception as e:
                    failures.append(e)
        if failures:
            raise failures[0]

    def stop_all(self) -> None:
        """SIGTERM every launcher at once, then wait for each (SIGKILL after 15 s)."""
        procs = [m.proc for m in self.members.values() if m.proc is not None and m.proc.alive()]
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.proc.send_signal(signal.SIGTERM)
        for p in procs:
            p.stop(timeout=15)


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, from the parent ids in /proc/<pid>/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out = [pid]
    i = 0
    while i < len(out):
        out.extend(children.get(out[i], []))
        i += 1
    return out


def kill_member(m: Member) -> None:
    """SIGKILL the launcher and everything it started at once: a machine that dies."""
    assert m.proc is not None
    for pid in process_tree(m.proc.proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    m.proc.proc.wait(10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    ports = [free_port() for _ in range(3)]
    members = []
    for i in range(3):
        m = c.add(f"node-{i + 1}", [p for j, p in enumerate(ports) if j != i])
        m.cluster_port = ports[i]
        m.args[m.args.index("--cluster-port") + 1] = str(ports[i])
        members.append(m)
    try:
        c.start(*members)
        yield c
    finally:
        c.stop_all()


# --- helpers ---------------------------------------------------------------------------------------


async def status(m: Member) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{m.http}/cluster", timeout=aiohttp.ClientTimeout(total=5)) as r,
    ):
        assert r.status == 200
        return dict(await r.json())


async def wait_status(m: Member, check: Any, timeout: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, AssertionError):
            last = await status(m)
            if check(last):
                return last
        await asyncio.sleep(0.2)
    summary = {k: last.get(k) for k in ("tableVersion", "members", "migrations")}
    raise AssertionError(f"{what} not reached within {timeout}s; last /cluster: {summary}")


def settled(nodes: set[str]) -> Any:
    """A /cluster check: exactly ``nodes`` own partitions, each a fair share, nothing migrating."""

    def check(s: dict[str, Any]) -> bool:
        owners = {p["owner"] for p in s["partitions"]}
        return owners == nodes and not s["migrations"]

    return check


class ClusterClient:
    """A cluster-aware client: reads PARTITION_MAP and talks to the edge in front of each key's
    owner, one connection per node."""

    def __init__(self, seed: str) -> None:
        self.seed = seed
        self.map: dict[str, Any] = {}
        self.conns: dict[str, WsClient] = {}

    async def refresh(self) -> dict[str, Any]:
        c = await self.conn_to(self.seed)
        await c.send({"type": "PARTITION_MAP_REQUEST", "payload": {"currentVersion": 0}})
        self.map = payload(await c.expect("PARTITION_MAP", 10))
        return self.map

    async def conn_to(self, url: str) -> WsClient:
        c = self.conns.get(url)
        if c is None or c.closed.is_set():
            c = self.conns[url] = await WsClient.connect(url)
        return c

    def endpoint_of(self, key: str) -> str:
        part = self.map["partitions"][partition_of(key)]
        node = next(n for n in self.map["nodes"] if n["nodeId"] == part["ownerNodeId"])
        return str(node["endpoints"]["websocket"])

    async def put(self, map_name: str, key: str, value: Any) -> dict[str, Any]:
        c = await self.conn_to(self.endpoint_of(key))
        return await c.write(lww_put(map_name, key, value), timeout=15)

    async def close(self) -> None:
        for c in self.conns.values():
            await c.close()


async def read_all(url: str, map_name: str) -> dict[str, Any]:
    """Every live record of the map, pulled through Merkle sync (a query answer stops at 10 000
    rows with ``hasMore``, and a writer under load can ack more than that)."""
    async with await WsClient.connect(url) as c:
        walk = await c.merkle_walk(map_name, timeout=60)
    return {k: r["value"] for k, r in walk.records.items() if r.get("value") is not None}


@dataclass
class Writer:
    """Writes batches of fresh keys through one edge until stopped; remembers what was acked."""

    url: str
    map_name: str
    concern: str = "REPLICATED"
    batch: int = 20
    acked: dict[str, int] = field(default_factory=dict)
    failures: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        n = 0
        async with await WsClient.connect(self.url) as c:
            while not self.stop.is_set():
                ops = [lww_put(self.map_name, f"k{n + i}", n + i) for i in range(self.batch)]
                n += self.batch
                await c.send(
                    {"type": "OP_BATCH", "payload": {"ops": ops, "writeConcern": self.concern}}
                )
                last = ops[-1]["id"]
                reply = await c.expect(
                    lambda m, last=last: (
                        m.get("type") == "ERROR"
                        or (m.get("type") == "OP_ACK" and payload(m).get("lastId") == last)
                    ),
                    30,
                )
                if reply["type"] == "OP_ACK" and payload(reply)["achievedLevel"] in (
                    self.concern,
                    "PERSISTED",
                ):
                    for op in ops:
                        self.acked[op["key"]] = op["record"]["value"]
                else:
                    self.failures += 1


# --- the tests -------------------------------------------------------------------------------------


async def test_three_launchers_form_one_cluster_with_a_three_node_partition_map(
    cluster: Cluster,
) -> None:
    m1, m2, m3 = (cluster.members[f"node-{i}"] for i in (1, 2, 3))
    await wait_status(m1, settled({"node-1", "node-2", "node-3"}), 60, "a settled 3-node table")
    client = ClusterClient(m2.ws)
    try:
        pm = await client.refresh()
        assert pm["partitionCount"] == 271 and len(pm["partitions"]) == 271 and pm["version"] > 0
        urls = {n["nodeId"]: n["endpoints"]["websocket"] for n in pm["nodes"]}
        assert urls == {"node-1": m1.ws, "node-2": m2.ws, "node-3": m3.ws}
        owners = [p["ownerNodeId"] for p in pm["partitions"]]
        assert {o: owners.count(o) for o in urls} == pytest.approx(
            {o: 271 / 3 for o in urls}, abs=1
        )
        assert all(p["ownerNodeId"] not in p["backupNodeIds"] for p in pm["partitions"])
        # Asking with the current version gets no answer (PROTOCOL.md 9).
        c = await client.conn_to(m2.ws)
        await c.send(
            {"type": "PARTITION_MAP_REQUEST", "payload": {"currentVersion": pm["version"]}}
        )
        await c.expect_none("PARTITION_MAP", within=0.3)
    finally:
        await client.close()


async def test_cluster_client_writes_to_owner_edges_and_reads_through_another_node(
    cluster: Cluster,
) -> None:
    m1, m2, m3 = (cluster.members[f"node-{i}"] for i in (1, 2, 3))
    client = ClusterClient(m1.ws)
    try:
        pm = await client.refresh()
        keys = [f"user-{i}" for i in range(150)]
        used = set()
        for k in keys:
            used.add(client.endpoint_of(k))
            ack = await client.put("routed", k, {"n": k})
            assert payload(ack)["achievedLevel"] == "APPLIED"
        assert used == {m1.ws, m2.ws, m3.ws}  # every owner's edge took its own keys
        # Straight to the owner: no edge had to re-send anything to another owner.
        for m in (m1, m2, m3):
            s = await status(m)
            assert s["tableVersion"] == pm["version"]
        got = await read_all(m3.ws, "routed")
        assert got == {k: {"n": k} for k in keys}
    finally:
        await client.close()


async def test_topic_messages_travel_between_edges_of_different_members(
    cluster: Cluster,
) -> None:
    m1, m2 = cluster.members["node-1"], cluster.members["node-2"]
    async with await WsClient.connect(m1.ws) as sub, await WsClient.connect(m2.ws) as pub:
        await sub.send({"type": "TOPIC_SUB", "payload": {"topic": "chat:lobby"}})
        await pub.send({"type": "TOPIC_SUB", "payload": {"topic": "chat:lobby"}})
        await sub.ping()
        await pub.ping()
        for i in range(3):
            await pub.send({"type": "TOPIC_PUB", "payload": {"topic": "chat:lobby", "data": i}})
        got = [payload(m)["data"] for m in await sub.expect_many("TOPIC_MESSAGE", 3, 10)]
        assert got == [0, 1, 2]
        await pub.expect_none("TOPIC_MESSAGE", within=0.3)  # never back to the publisher


async def test_a_write_through_one_member_reaches_a_live_query_on_another(
    cluster: Cluster,
) -> None:
    m1, m3 = cluster.members["node-1"], cluster.members["node-3"]
    async with await WsClient.connect(m1.ws) as watcher, await WsClient.connect(m3.ws) as writer:
        qid, first = await watcher.subscribe("live", {"where": {"team": "red"}})
        assert first["results"] == []
        for i in range(5):  # keys on every owner, written through another member's edge
            await writer.write(lww_put("live", f"p{i}", {"team": "red", "n": i}))
        updates = await watcher.expect_many("QUERY_UPDATE", 5, 10)
        assert sorted(payload(u)["key"] for u in updates) == [f"p{i}" for i in range(5)]
        assert {payload(u)["changeType"] for u in updates} == {"ENTER"}
        assert {payload(u)["queryId"] for u in updates} == {qid}


async def test_a_fourth_member_joins_during_sustained_writes_and_nothing_acked_is_lost(
    cluster: Cluster,
) -> None:
    m1 = cluster.members["node-1"]
    seeds = [m.cluster_port for m in cluster.members.values()]
    writer = Writer(m1.ws, "join", concern="APPLIED")
    task = asyncio.create_task(writer.run())
    follower = ClusterClient(m1.ws)
    first = (await follower.refresh())["version"]  # a cluster client: it gets every new map
    try:
        while len(writer.acked) < 200:
            await asyncio.sleep(0.05)
            assert not task.done(), task
        m4 = cluster.add("node-4", seeds)
        await asyncio.to_thread(cluster.start, m4)
        everyone = {"node-1", "node-2", "node-3", "node-4"}
        s = await wait_status(m1, settled(everyone), 90, "node-4 owning its share")
        assert sum(1 for p in s["partitions"] if p["owner"] == "node-4") >= 60
        pushed = await follower.conns[m1.ws].expect(
            lambda m: (
                m.get("type") == "PARTITION_MAP" and payload(m)["version"] >= s["tableVersion"]
            ),
            10,
        )
        assert payload(pushed)["version"] > first
        assert "node-4" in {n["nodeId"] for n in payload(pushed)["nodes"]}
    finally:
        writer.stop.set()
        await asyncio.wait_for(task, 60)
        await follower.close()
    assert len(writer.acked) > 200
    got = await read_all(cluster.members["node-4"].ws, "join")
    missing = set(writer.acked) - set(got)
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {sorted(missing)[:5]}"
    assert all(got[k] == v for k, v in writer.acked.items())


async def test_sigkill_of_a_member_during_replicated_writes_loses_none_and_fails_over(
    cluster: Cluster,
) -> None:
    m1, m2, victim = (cluster.members[n] for n in ("node-1", "node-2", "node-3"))
    before = await status(m1)
    writer = Writer(m1.ws, "crash", concern="REPLICATED")
    task = asyncio.create_task(writer.run())
    try:
        while len(writer.acked) < 200:
            await asyncio.sleep(0.05)
            assert not task.done(), task
        await asyncio.to_thread(kill_member, victim)
        killed_at = time.monotonic()
        after = await wait_status(
            m1,
            lambda s: (
                all(p["owner"] != "node-3" for p in s["partitions"])
                and s["tableVersion"] > before["tableVersion"]
            ),
            40,
            "node-3's partitions promoted",
        )
        # Within seconds: the member TTL, plus a new JetStream stream leader when the dead node
        # led one (NATS Raft elections take several seconds).
        assert time.monotonic() - killed_at < 30
        assert "node-3" not in {b for p in after["partitions"] for b in p["backups"]}
        acked_at_failover = len(writer.acked)
        while len(writer.acked) < acked_at_failover + 100:
            await asyncio.sleep(0.05)
            assert not task.done(), task
    finally:
        writer.stop.set()
        await asyncio.wait_for(task, 60)
    got = await read_all(m2.ws, "crash")
    missing = set(writer.acked) - set(got)
    assert not missing, f"{len(missing)} REPLICATED writes lost, e.g. {sorted(missing)[:5]}"


async def test_the_killed_member_restarts_on_the_same_ports_and_rejoins(
    cluster: Cluster,
) -> None:
    victim = cluster.members["node-3"]
    assert victim.proc is not None and not victim.proc.alive()
    await asyncio.to_thread(cluster.start, victim)
    everyone = {"node-1", "node-2", "node-3", "node-4"}

    def back(s: dict[str, Any]) -> bool:
        me = [m for m in s["members"]["storage"] if m["nodeId"] == "node-3"]
        return bool(settled(everyone)(s) and me and me[0]["inTable"])

    await wait_status(victim, back, 90, "node-3 back with its share, as a new incarnation")
    got = await read_all(victim.ws, "crash")  # its edge serves the whole map again
    assert len(got) > 200


def storage_pid(m: Member) -> int:
    assert m.proc is not None
    for pid in process_tree(m.proc.proc.pid):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"services.storage" in f.read():
                return pid
    raise AssertionError(f"no storage process under {m.node_id}'s launcher")


async def test_a_paused_storage_node_is_failed_over_and_refuses_writes_when_it_wakes_up(
    cluster: Cluster,
) -> None:
    m1, paused = cluster.members["node-1"], cluster.members["node-2"]
    before = await status(m1)
    (info,) = [s for s in before["members"]["storage"] if s["nodeId"] == "node-2"]
    pid = storage_pid(paused)
    os.kill(pid, signal.SIGSTOP)
    try:
        await wait_status(
            m1,
            lambda s: all(p["owner"] != "node-2" for p in s["partitions"]),
            40,
            "node-2's partitions promoted while it is paused",
        )
    finally:
        os.kill(pid, signal.SIGCONT)
    # Woken up with its old table: a write straight to it, as an edge that missed the new table
    # would send it, is refused for every partition (fenced by its stale heartbeat, then by the
    # table it reloads, which no longer names it).
    keys = [f"late-{i}" for i in range(600)]
    b = OpBatchBuilder()
    for k in keys:
        b.append("late", k, PUT, 1, 0, "t", b"\xc0", "", 0, "")
    async with StorageClient(info["address"], timeout=10) as client:
        res = await client.apply(b, table_version=before["tableVersion"])
    assert set(res.statuses) == {OpStatus.OP_NOT_OWNER}
    everyone = {"node-1", "node-2", "node-3", "node-4"}
    await wait_status(m1, settled(everyone), 90, "node-2 back with its share")
