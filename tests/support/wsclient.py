"""A raw MsgPack WebSocket client for tests, written independently of the server code.

It speaks the TopGun client protocol the way TopGun's own raw test client does: one MsgPack
message per binary frame, AUTH with an HS256 token, and a Merkle walker that pulls a whole map.
Every wait has a deadline; nothing sleeps to synchronise.

    async with await WsClient.connect(url, token=make_token("alice")) as c:
        ack = await c.write(lww_put("todos", "t1", {"title": "milk"}))
        rows = await c.query("todos")
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import msgpack

DEFAULT_TIMEOUT = 5.0
TEST_SECRET = "test-e2e-secret"

Message = dict[str, Any]
Predicate = Callable[[Message], bool]

_ids = itertools.count(1)


# --- tokens and records --------------------------------------------------------------------------


def make_token(
    sub: str | None = "user-0",
    *,
    secret: str = TEST_SECRET,
    roles: Sequence[str] = (),
    expires_in: float = 3600,
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    """A JWT like TopGun's test helper signs: ``sub``, ``roles``, ``iat``, ``exp``."""
    now = int(time.time())
    body: dict[str, Any] = {"roles": list(roles), "iat": now, "exp": now + int(expires_in)}
    if sub is not None:
        body["sub"] = sub
    body.update(claims)
    return jwt.encode(body, secret, algorithm=algorithm)


def now_ms() -> int:
    return int(time.time() * 1000)


def hlc(
    millis: int | None = None, counter: int = 0, node_id: str = "test-client"
) -> dict[str, Any]:
    return {"millis": now_ms() if millis is None else millis, "counter": counter, "nodeId": node_id}


def ts_string(ts: Mapping[str, Any]) -> str:
    return f"{int(ts['millis'])}:{int(ts['counter'])}:{ts['nodeId']}"


def next_op_id() -> str:
    return str(next(_ids))


def lww_put(
    map_name: str,
    key: str,
    value: Any,
    *,
    timestamp: Mapping[str, Any] | None = None,
    op_id: str | None = None,
    ttl_ms: int | None = None,
) -> dict[str, Any]:
    """A ClientOp PUT as the SDK sends it (op id is a decimal string)."""
    record: dict[str, Any] = {"value": value, "timestamp": dict(timestamp or hlc())}
    if ttl_ms is not None:
        record["ttlMs"] = ttl_ms
    return {
        "id": op_id or next_op_id(),
        "mapName": map_name,
        "opType": "PUT",
        "key": key,
        "record": record,
    }


def lww_remove(
    map_name: str,
    key: str,
    *,
    timestamp: Mapping[str, Any] | None = None,
    op_id: str | None = None,
) -> dict[str, Any]:
    return {
        "id": op_id or next_op_id(),
        "mapName": map_name,
        "opType": "REMOVE",
        "key": key,
        "record": {"value": None, "timestamp": dict(timestamp or hlc())},
    }


def or_add(
    map_name: str,
    key: str,
    value: Any,
    *,
    timestamp: Mapping[str, Any] | None = None,
    op_id: str | None = None,
) -> dict[str, Any]:
    ts = dict(timestamp or hlc())
    return {
        "id": op_id or next_op_id(),
        "mapName": map_name,
        "opType": "OR_ADD",
        "key": key,
        "orRecord": {"value": value, "timestamp": ts, "tag": ts_string(ts)},
    }


def or_remove(map_name: str, key: str, tag: str, *, op_id: str | None = None) -> dict[str, Any]:
    return {
        "id": op_id or next_op_id(),
        "mapName": map_name,
        "opType": "OR_REMOVE",
        "key": key,
        "orTag": tag,
    }


def encode(msg: Any) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)


def inbound_batch(frames: Iterable[bytes]) -> bytes:
    """The inbound BATCH frame TopGun's server accepts: big-endian length-prefixed items, no count."""
    items = list(frames)
    data = b"".join(struct.pack(">I", len(f)) + f for f in items)
    return encode({"type": "BATCH", "count": len(items), "data": data})


def _unpack_outbound_batch(data: bytes) -> list[Message]:
    """S->C BATCH as the client reads it: little-endian count, then length-prefixed messages."""
    (count,) = struct.unpack_from("<I", data, 0)
    out, pos = [], 4
    for _ in range(count):
        (n,) = struct.unpack_from("<I", data, pos)
        out.append(msgpack.unpackb(data[pos + 4 : pos + 4 + n], raw=False, strict_map_key=False))
        pos += 4 + n
    return out


def payload(msg: Message) -> dict[str, Any]:
    p = msg.get("payload")
    return p if isinstance(p, dict) else {}


# --- the client ----------------------------------------------------------------------------------


@dataclass
class MerkleWalk:
    """What a full Merkle pull of one map returned."""

    root: int
    records: dict[str, Any] = field(default_factory=dict)  # key -> LWW record, or OR entry
    requests: int = 0
    buckets: dict[str, dict[str, int]] = field(default_factory=dict)  # path -> children

    def values(self) -> dict[str, Any]:
        return {k: r.get("value") for k, r in self.records.items()}


class ProtocolClosed(AssertionError):
    """The server closed the socket while the test waited for a message."""


class WsClient:
    """One WebSocket connection. Received messages are buffered; ``expect`` takes the first that
    matches, leaving the others for later waits."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._http = http
        self.ws = ws
        self.messages: list[Message] = []  # every message ever received, in order
        self._inbox: deque[Message] = deque()
        self._arrived = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.user_id: str | None = None
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_msg_size: int = 64 * 1024 * 1024,
    ) -> WsClient:
        """Open the socket; with ``token``, send AUTH at once (as the SDK does) and wait for AUTH_ACK."""
        http = aiohttp.ClientSession()
        try:
            ws = await http.ws_connect(
                url, timeout=aiohttp.ClientWSTimeout(ws_close=timeout), max_msg_size=max_msg_size
            )
        except BaseException:
            await http.close()
            raise
        client = cls(http, ws)
        if token is not None:
            await client.authenticate(token, timeout=timeout)
        return client

    async def __aenter__(self) -> WsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def authenticate(self, token: str, *, timeout: float = DEFAULT_TIMEOUT) -> Message:
        await self.send({"type": "AUTH", "token": token})
        reply = await self.expect(lambda m: m.get("type") in ("AUTH_ACK", "AUTH_FAIL"), timeout)
        if reply["type"] == "AUTH_FAIL":
            raise AssertionError(f"authentication failed: {reply}")
        self._take(lambda m: m.get("type") == "AUTH_REQUIRED")  # sent before AUTH_ACK, if at all
        self.user_id = reply.get("userId")
        return reply

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        await self._http.close()

    # -- sending --

    async def send(self, msg: Any) -> None:
        await self.ws.send_bytes(encode(msg))

    async def send_bytes(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def send_text(self, text: str) -> None:
        await self.ws.send_str(text)

    # -- receiving --

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                if frame.type == aiohttp.WSMsgType.BINARY:
                    try:
                        msg = msgpack.unpackb(frame.data, raw=False, strict_map_key=False)
                    except Exception:
                        continue
                    msgs = (
                        _unpack_outbound_batch(msg["data"])
                        if isinstance(msg, dict) and msg.get("type") == "BATCH"
                        else [msg]
                    )
                    for m in msgs:
                        if isinstance(m, dict):
                            self.messages.append(m)
                            self._inbox.append(m)
                    self._arrived.set()
                elif frame.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                    break
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()
            self._arrived.set()

    def _take(self, pred: Predicate) -> Message | None:
        for i, m in enumerate(self._inbox):
            if pred(m):
                del self._inbox[i]
                return m
        return None

    async def expect(
        self, what: str | Predicate, timeout: float = DEFAULT_TIMEOUT, **payload_fields: Any
    ) -> Message:
        """The first buffered or arriving message that matches ``what`` (a type name or a
        predicate) and, for keyword arguments, has those payload (or flat) field values."""
        pred = _matcher(what, payload_fields)
        deadline = time.monotonic() + timeout
        while True:
            m = self._take(pred)
            if m is not None:
                return m
            if self.closed.is_set():
                raise ProtocolClosed(f"socket closed ({self.close_code}) while waiting for {what}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no {what} {payload_fields or ''} within {timeout}s; "
                    f"last received: {self.messages[-5:]}"
                )
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def expect_none(
        self, what: str | Predicate, within: float = 0.5, **payload_fields: Any
    ) -> None:
        """Assert that no matching message arrives within ``within`` seconds (a negative check)."""
        pred = _matcher(what, payload_fields)
        deadline = time.monotonic() + within
        while True:
            m = self._take(pred)
            if m is not None:
                raise AssertionError(f"unexpected {m}")
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed.is_set():
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def expect_many(
        self, what: str | Predicate, count: int, timeout: float = DEFAULT_TIMEOUT
    ) -> list[Message]:
        deadline = time.monotonic() + timeout
        out = []
        for _ in range(count):
            out.append(await self.expect(what, max(0.0, deadline - time.monotonic())))
        return out

    async def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> int | None:
        await asyncio.wait_for(self.closed.wait(), timeout)
        return self.close_code

    def drain(self) -> list[Message]:
        """Every buffered message not yet taken by an ``expect``."""
        out = list(self._inbox)
        self._inbox.clear()
        return out

    # -- protocol conveniences --

    async def ping(self, timeout: float = DEFAULT_TIMEOUT) -> Message:
        stamp = now_ms()
        await self.send({"type": "PING", "timestamp": stamp})
        return await self.expect(
            lambda m: m.get("type") == "PONG" and m.get("timestamp") == stamp, timeout
        )

    async def write(self, op: dict[str, Any], timeout: float = DEFAULT_TIMEOUT) -> Message:
        """CLIENT_OP, then the OP_ACK whose lastId is the op's id."""
        await self.send({"type": "CLIENT_OP", "payload": op})
        return await self.expect("OP_ACK", timeout, lastId=op["id"])

    async def write_batch(
        self, ops: Sequence[dict[str, Any]], timeout: float = DEFAULT_TIMEOUT, **extra: Any
    ) -> Message:
        """OP_BATCH, then the OP_ACK whose lastId is the last op's id."""
        await self.send({"type": "OP_BATCH", "payload": {"ops": list(ops), **extra}})
        return await self.expect("OP_ACK", timeout, lastId=ops[-1]["id"])

    async def subscribe(
        self,
        map_name: str,
        query: Mapping[str, Any] | None = None,
        *,
        query_id: str | None = None,
        fields: Sequence[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> tuple[str, Message]:
        """QUERY_SUB; returns the query id and the first QUERY_RESP payload."""
        qid = query_id or f"q-{next(_ids)}"
        body: dict[str, Any] = {"queryId": qid, "mapName": map_name, "query": dict(query or {})}
        if fields is not None:
            body["fields"] = list(fields)
        await self.send({"type": "QUERY_SUB", "payload": body})
        resp = await self.expect("QUERY_RESP", timeout, queryId=qid)
        return qid, payload(resp)

    async def query(
        self, map_name: str, query: Mapping[str, Any] | None = None, **kw: Any
    ) -> list[dict[str, Any]]:
        """A one-shot query: subscribe, take the snapshot, unsubscribe."""
        qid, resp = await self.subscribe(map_name, query, **kw)
        await self.send({"type": "QUERY_UNSUB", "payload": {"queryId": qid}})
        return list(resp["results"])

    async def merkle_walk(
        self, map_name: str, *, or_map: bool = False, timeout: float = 30.0
    ) -> MerkleWalk:
        """Pull a whole map through Merkle sync, level by level with every request of a level in
        flight at once, following only children with a non-zero hash."""
        deadline = time.monotonic() + timeout
        prefix = "ORMAP_" if or_map else ""
        if or_map:
            await self.send(
                {"type": "ORMAP_SYNC_INIT", "mapName": map_name, "rootHash": 0, "bucketHashes": {}}
            )
        else:
            await self.send({"type": "SYNC_INIT", "mapName": map_name})
        root_msg = await self.expect(f"{prefix}SYNC_RESP_ROOT", timeout, mapName=map_name)
        walk = MerkleWalk(root=int(payload(root_msg)["rootHash"]))
        if walk.root == 0:
            return walk
        bucket_type, leaf_type = f"{prefix}SYNC_RESP_BUCKETS", f"{prefix}SYNC_RESP_LEAF"
        frontier = [""]
        while frontier:
            for path in frontier:
                await self.send(
                    {
                        "type": f"{prefix}MERKLE_REQ_BUCKET",
                        "payload": {"mapName": map_name, "path": path},
                    }
                )
            walk.requests += len(frontier)
            pending = set(frontier)
            frontier = []
            while pending:
                m = await self.expect(
                    lambda m, pending=pending: (
                        m.get("type") in (bucket_type, leaf_type)
                        and payload(m).get("mapName") == map_name
                        and payload(m).get("path") in pending
                    ),
                    max(0.0, deadline - time.monotonic()),
                )
                p = payload(m)
                pending.discard(p["path"])
                if m["type"] == bucket_type:
                    buckets = {str(k): int(v) for k, v in p["buckets"].items()}
                    walk.buckets[p["path"]] = buckets
                    frontier.extend(p["path"] + k for k, h in buckets.items() if h)
                elif or_map:
                    for entry in p["entries"]:
                        walk.records[entry["key"]] = entry
                else:
                    for item in p["records"]:
                        walk.records[item["key"]] = item["record"]
        return walk


def _matcher(what: str | Predicate, fields: Mapping[str, Any]) -> Predicate:
    if isinstance(what, str):
        type_name = what

        def by_type(m: Message) -> bool:
            if m.get("type") != type_name:
                return False
            body = m.get("payload") if isinstance(m.get("payload"), dict) else m
            return all(body.get(k) == v for k, v in fields.items())

        return by_type
    if fields:
        base = what

        def with_fields(m: Message) -> bool:
            body = m.get("payload") if isinstance(m.get("payload"), dict) else m
            return base(m) and all(body.get(k) == v for k, v in fields.items())

        return with_fields
    return what


async def connect_many(
    url: str, n: int, *, token_prefix: str = "user", **kw: Any
) -> list[WsClient]:
    """``n`` authenticated clients (users ``user-0`` … ``user-{n-1}``) connected at once."""
    return list(
        await asyncio.gather(
            *(
                WsClient.connect(url, token=make_token(f"{token_prefix}-{i}"), **kw)
                for i in range(n)
            )
        )
    )
