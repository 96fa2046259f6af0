"""A small in-process stand-in for the edge, for the SDK's unit tests only.

It speaks just enough of the client protocol (auth, PING, OP_BATCH, SERVER_EVENT, Merkle sync
for LWW and OR maps, QUERY_SUB with where-maps, topics, counters, partition map) over a real
aiohttp WebSocket on a loopback port, keeps real CRDT replicas (``libs.crdt``), and can be told
to misbehave: send garbage frames, stop acknowledging, refuse tokens. The SDK's end-to-end tests
run against the real launcher instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
from aiohttp import WSMsgType, web

from libs.crdt import HLC, LwwMap, LwwRecord, OrMap, OrRecord, PNCounter
from libs.query import compile_filter, evaluate, parse_query


def pack(msg: Any) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)


def server_batch(msgs: list[dict[str, Any]]) -> bytes:
    """A BATCH frame in the layout the client reads (LE count, LE length-prefixed items)."""
    frames = [pack(m) for m in msgs]
    data = struct.pack("<I", len(frames)) + b"".join(struct.pack("<I", len(f)) + f for f in frames)
    return pack({"type": "BATCH", "count": len(frames), "data": data})


@dataclass
class Conn:
    ws: web.WebSocketResponse
    authed: bool = False
    maps: set[str] = field(default_factory=set)
    queries: dict[str, tuple[str, Any]] = field(default_factory=dict)
    topics: set[str] = field(default_factory=set)
    received: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, msg: dict[str, Any] | bytes) -> None:
        if not self.ws.closed:
            await self.ws.send_bytes(msg if isinstance(msg, bytes) else pack(msg))


class FakeEdge:
    """``async with FakeEdge() as edge:`` serves on ``edge.url`` until the block ends."""

    def __init__(
        self,
        *,
        token: str | None = None,
        port: int = 0,
        batch_replies: bool = False,
    ) -> None:
        self.token = token  # None: no-auth mode
        self.port = port
        self.batch_replies = batch_replies
        self.hlc = HLC("fake-edge")
        self.lww: dict[str, LwwMap] = {}
        self.ormaps: dict[str, OrMap] = {}
        self.counters: dict[str, PNCounter] = {}
        self.conns: list[Conn] = []
        self.ack = True
        self.fail_batches = 0  # answer this many OP_BATCHes with ERROR 503 instead of applying
        self.garbage_after_auth: list[bytes] = []
        self.auth_attempts: list[str] = []
        self.ops_applied = 0
        self.frames_in: list[str] = []
        self.on_frame: Callable[[Conn, dict[str, Any]], None] | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def __aenter__(self) -> FakeEdge:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self._handle)
        app.router.add_get("/", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        for c in list(self.conns):
            with contextlib.suppress(Exception):
                await c.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def drop_connections(self) -> None:
        for c in list(self.conns):
            await c.ws.close()

    def lww_map(self, name: str) -> LwwMap:
        return self.lww.setdefault(name, LwwMap(self.hlc))

    def or_map(self, name: str) -> OrMap:
        return self.ormaps.setdefault(name, OrMap(self.hlc))

    def seed(self, name: str, rows: dict[str, Any]) -> None:
        m = self.lww_map(name)
        for k, v in rows.items():
            m.set(k, v)

    # --- the socket ---

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024)
        await ws.prepare(request)
        conn = Conn(ws, authed=self.token is None)
        self.conns.append(conn)
        try:
            if self.token is not None:
                await conn.send({"type": "AUTH_REQUIRED"})
            async for frame in ws:
                if frame.type is not WSMsgType.BINARY:
                    continue
                msg = msgpack.unpackb(frame.data, raw=False, strict_map_key=False)
                self.frames_in.append(msg.get("type"))
                conn.received.append(msg)
                if self.on_frame is not None:
                    self.on_frame(conn, msg)
                await self._dispatch(conn, msg)
        finally:
            self.conns.remove(conn)
        return ws

    async def _dispatch(self, conn: Conn, msg: dict[str, Any]) -> None:
        t = msg.get("type")
        p = msg.get("payload") or {}
        if t == "AUTH":
            self.auth_attempts.append(msg.get("token", ""))
            if self.token is not None and msg.get("token") != self.token:
                await conn.send({"type": "AUTH_FAIL", "error": "Authentication failed"})
                await conn.ws.close()
                return
            if not conn.authed or self.token is None:
                conn.authed = True
                await conn.send({"type": "AUTH_ACK", "userId": "user-1"})
                for g in self.garbage_after_auth:
                    await conn.send(g)
            return
        if t == "DEVICE_HELLO" and self.token is None:
            for g in self.garbage_after_auth:
                await conn.send(g)
            return
        if not conn.authed:
            return
        if t == "PING":
            await conn.send({"type": "PONG", "timestamp": msg["timestamp"], "serverTime": 1})
        elif t == "OP_BATCH":
            await self._op_batch(conn, p)
        elif t == "SYNC_INIT":
            m = self.lww_map(msg["mapName"])
            await conn.send(
                {
                    "type": "SYNC_RESP_ROOT",
                    "payload": {
                        "mapName": msg["mapName"],
                        "rootHash": m.merkle.root,
                        "timestamp": self.hlc.now().to_wire(),
                    },
                }
            )
        elif t == "MERKLE_REQ_BUCKET":
            await self._bucket(conn, p["mapName"], p["path"], self.lww_map(p["mapName"]), False)
        elif t == "ORMAP_SYNC_INIT":
            m2 = self.or_map(msg["mapName"])
            await conn.send(
                {
                    "type": "ORMAP_SYNC_RESP_ROOT",
                    "payload": {
                        "mapName": msg["mapName"],
                        "rootHash": m2.merkle.root,
                        "timestamp": self.hlc.now().to_wire(),
                    },
                }
            )
        elif t == "ORMAP_MERKLE_REQ_BUCKET":
            await self._bucket(conn, p["mapName"], p["path"], self.or_map(p["mapName"]), True)
        elif t == "ORMAP_PUSH_DIFF":
            m2 = self.or_map(p["mapName"])
            for e in p["entries"]:
                m2.merge_key(
                    e["key"], [OrRecord.from_wire(r) for r in e["records"]], e["tombstones"]
                )
        elif t == "QUERY_SUB":
            await self._query_sub(conn, p)
        elif t == "QUERY_UNSUB":
            conn.queries.pop(p["queryId"], None)
        elif t == "TOPIC_SUB":
            conn.topics.add(p["topic"])
        elif t == "TOPIC_UNSUB":
            conn.topics.discard(p["topic"])
        elif t == "TOPIC_PUB":
            for other in self.conns:
                if other is not conn and p["topic"] in other.topics:
                    await other.send(
                        {
                            "type": "TOPIC_MESSAGE",
                            "payload": {
                                "topic": p["topic"],
                                "data": p.get("data"),
                                "publisherId": "user-1",
                                "timestamp": int(time.time() * 1000),
                            },
                        }
                    )
        elif t in ("COUNTER_REQUEST", "COUNTER_SYNC"):
            c = self.counters.setdefault(p["name"], PNCounter("fake-edge"))
            if t == "COUNTER_SYNC":
                c.merge(p["state"])
            reply = "COUNTER_RESPONSE" if t == "COUNTER_REQUEST" else "COUNTER_UPDATE"
            await conn.send({"type": reply, "payload": {"name": p["name"], "state": c.to_wire()}})
            if t == "COUNTER_SYNC":
                for other in self.conns:
                    if other is not conn:
                        await other.send(
                            {
                                "type": "COUNTER_UPDATE",
                                "payload": {"name": p["name"], "state": c.to_wire()},
                            }
                        )
        elif t == "PARTITION_MAP_REQUEST":
            await conn.send(
                {
                    "type": "PARTITION_MAP",
                    "payload": {
                        "version": 1,
                        "partitionCount": 271,
                        "nodes": [
                            {
                                "nodeId": "node-0",
                                "endpoints": {"websocket": self.url},
                                "status": "ACTIVE",
                            }
                        ],
                        "partitions": [
                            {"partitionId": i, "ownerNodeId": "node-0", "backupNodeIds": []}
                            for i in range(271)
                        ],
                        "generatedAt": 1,
                    },
                }
            )
        elif t in ("SEARCH", "SEARCH_SUB"):
            rid = p.get("requestId") or p.get("subscriptionId")
            await conn.send(
                {
                    "type": "SEARCH_RESP",
                    "payload": {"requestId": rid, "results": [], "totalCount": 0},
                }
            )

    async def _op_batch(self, conn: Conn, p: dict[str, Any]) -> None:
        ops = p.get("ops", [])
        if self.fail_batches:
            self.fail_batches -= 1
            await conn.send({"type": "ERROR", "payload": {"code": 503, "message": "unavailable"}})
            return
        events = []
        for op in ops:
            name, key = op["mapName"], op["key"]
            kind = op.get("opType")
            if kind in ("PUT", "REMOVE"):
                rec = LwwRecord.from_wire(op["record"])
                if self.lww_map(name).merge(key, rec):
                    events.append(
                        {"mapName": name, "eventType": kind, "key": key, "record": op["record"]}
                    )
            elif kind == "OR_ADD":
                orec = OrRecord.from_wire(op["orRecord"])
                if self.or_map(name).apply(key, orec):
                    events.append(
                        {
                            "mapName": name,
                            "eventType": "OR_ADD",
                            "key": key,
                            "orRecord": op["orRecord"],
                            "orTag": orec.tag,
                        }
                    )
            elif kind == "OR_REMOVE":
                self.or_map(name).apply_tombstone(op["orTag"])
                events.append(
                    {"mapName": name, "eventType": "OR_REMOVE", "key": key, "orTag": op["orTag"]}
                )
            self.ops_applied += 1
        if self.ack and ops:
            await conn.send({"type": "OP_ACK", "payload": {"lastId": ops[-1]["id"]}})
        for ev in events:
            for other in self.conns:
                if other is conn or not other.queries:
                    continue
                if any(q[0] == ev["mapName"] for q in other.queries.values()):
                    await other.send({"type": "SERVER_EVENT", "payload": ev})
                for qid, (qmap, match) in other.queries.items():
                    if qmap != ev["mapName"] or ev["eventType"] not in ("PUT", "REMOVE"):
                        continue
                    value = ev["record"]["value"]
                    if value is not None and match(ev["key"], value):
                        await other.send(
                            {
                                "type": "QUERY_UPDATE",
                                "payload": {
                                    "queryId": qid,
                                    "key": ev["key"],
                                    "value": value,
                                    "changeType": "UPDATE",
                                },
                            }
                        )

    async def _bucket(self, conn: Conn, name: str, path: str, m: Any, is_or: bool) -> None:
        prefix = "ORMAP_SYNC_RESP_" if is_or else "SYNC_RESP_"
        if len(path) < 3:
            reply = {
                "type": prefix + "BUCKETS",
                "payload": {"mapName": name, "path": path, "buckets": m.merkle.get_buckets(path)},
            }
        elif is_or:
            entries = [
                {
                    "key": k,
                    "records": [r.to_wire() for r in m.records(k)],
                    "tombstones": m.tombstones,
                }
                for k in m.merkle.keys_in_bucket(path)
            ]
            reply = {
                "type": prefix + "LEAF",
                "payload": {"mapName": name, "path": path, "entries": entries},
            }
        else:
            records = [
                {"key": k, "record": m.get_record(k).to_wire()}
                for k in m.merkle.keys_in_bucket(path)
            ]
            reply = {
                "type": prefix + "LEAF",
                "payload": {"mapName": name, "path": path, "records": records},
            }
        if self.batch_replies:
            await conn.send(server_batch([reply]))
        else:
            await conn.send(reply)

    async def _query_sub(self, conn: Conn, p: dict[str, Any]) -> None:
        q = p.get("query") or {}
        match = compile_filter(q.get("predicate"), q.get("where"))
        conn.queries[p["queryId"]] = (p["mapName"], match)
        m = self.lww.get(p["mapName"])
        rows = []
        if m is not None:
            res = evaluate(parse_query(q, p.get("fields")), m.entries().items())
            rows = [{"key": k, "value": v} for k, v in res.results]
        await conn.send(
            {"type": "QUERY_RESP", "payload": {"queryId": p["queryId"], "results": rows}}
        )


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for ``predicate()`` to hold, yielding to the loop; fail at the deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.005)
