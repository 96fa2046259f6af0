"""Merkle delta sync for LWW and OR maps (PROTOCOL.md 5, CRDT.md 8).

The tree of a map is built from the storage nodes' leaf sums: every owner keeps, per map, the
wrapping sum of ``mix(item hash)`` of each of the 4,096 depth-3 leaves over the partitions it
owns; the edge adds the owners' arrays and derives the three upper levels (``LeafSums``). That is
exactly the client's single trie, so equal data gives equal roots.

``SYNC_INIT`` fetches a fresh view of the map and keeps it for the connection's walk; bucket
requests answer from that view; leaf requests fetch the records of the leaf from every owner.
Leaf requests of all connections are coalesced: every path asked for in the same event-loop turn
(the client sends a level's requests together) goes to each owner in one BucketRecords call.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgpack

from libs.crdt import LeafSums, fnv1a_many
from libs.storage_client import (
    OR_ADD,
    OR_REMOVE,
    PUT,
    REMOVE,
    MapKind,
    StoredRecord,
    WriteConcern,
    records_from_batch,
)
from libs.wire import BadFrame, encode
from services.edge.dispatch import Message, payload_of, str_field
from services.edge.leaf_frames import LeafRow, lww_leaf_frame
from topgun_rpc.common_pb2 import RecordBatch

if TYPE_CHECKING:
    from services.edge.edge import Edge
    from services.edge.session import Session
    from services.edge.writes import Writes

log = logging.getLogger(__name__)

HEX = frozenset("0123456789abcdef")
MAX_VIEWS_PER_SESSION = 64
MAX_PATHS_PER_CALL = 1024
MAX_LEAF_CALLS_IN_FLIGHT = 2


def check_path(body: dict[str, Any], where: str) -> str:
    path = body.get("path")
    if type(path) is not str or len(path) > 3 or not HEX.issuperset(path):
        raise BadFrame(f"{where}: 'path' must be 0-3 lowercase hex digits")
    return path


def _unpack(value: bytes) -> Any:
    return msgpack.unpackb(value, raw=False, strict_map_key=False) if value else None


def _timestamp(r: StoredRecord) -> dict[str, Any]:
    return {"millis": r.millis, "counter": r.counter, "nodeId": r.node_id}


def or_entries(rows: Sequence[StoredRecord]) -> list[dict[str, Any]]:
    """ORMapEntry per key: its live records and its tombstoned tags."""
    entries: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.kind not in (OR_ADD, OR_REMOVE):
            continue
        e = entries.get(r.key)
        if e is None:
            e = entries[r.key] = {"key": r.key, "records": [], "tombstones": []}
        if r.kind == OR_ADD:
            rec: dict[str, Any] = {
                "value": _unpack(r.value),
                "timestamp": _timestamp(r),
                "tag": r.tag,
            }
            if r.ttl_ms:
                rec["ttlMs"] = r.ttl_ms
            e["records"].append(rec)
        else:
            e["tombstones"].append(r.tag)
    return list(entries.values())


_LEAF_PATHS = [f"{slot:03x}" for slot in range(4096)]


def lww_rows_by_path(
    pages: Sequence[RecordBatch], paths: Sequence[str]
) -> dict[str, list[LeafRow]]:
    """The LWW rows (live records and tombstones) of ``pages`` grouped by leaf path, read from
    the columns without building a row object per record."""
    by_path: dict[str, list[LeafRow]] = {p: [] for p in paths}
    for page in pages:
        n = len(page.keys)
        if not n:
            continue
        keys = list(page.keys)
        slots = (fnv1a_many(keys) >> 20).tolist()
        ttls = page.ttl_ms if len(page.ttl_ms) == n else [0] * n
        for key, slot, kind, millis, counter, node_id, value, ttl in zip(
            keys,
            slots,
            page.kinds,
            page.millis,
            page.counters,
            page.node_ids,
            page.values,
            ttls,
            strict=True,
        ):
            if kind != PUT and kind != REMOVE:
                continue
            rows = by_path.get(_LEAF_PATHS[slot])
            if rows is not None:
                rows.append((key, kind, millis, counter, node_id, value, ttl))
    return by_path


def records_by_path(
    records: Sequence[StoredRecord], paths: Sequence[str]
) -> dict[str, list[StoredRecord]]:
    by_path: dict[str, list[StoredRecord]] = {p: [] for p in paths}
    if records:
        slots = (fnv1a_many([r.key for r in records]) >> 20).tolist()
        for r, slot in zip(records, slots, strict=True):
            bucket = by_path.get(_LEAF_PATHS[slot])
            if bucket is not None:
                bucket.append(r)
    return by_path


class _LeafBatch:
    __slots__ = ("paths", "waiters")

    def __init__(self) -> None:
        self.paths: dict[str, None] = {}
        self.waiters: list[tuple[Session, str, bool]] = []  # (session, path, or_map)


class MerkleSync:
    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self._fetching: dict[str, asyncio.Future[tuple[LeafSums, int]]] = {}
        self._leaf_pending: dict[str, _LeafBatch] = {}
        self._leaf_inflight: dict[str, int] = {}
        self._leaf_scheduled = False

    # -- views --

    async def fetch_view(self, map_name: str) -> tuple[LeafSums, int]:
        """The map's current leaf sums and kind; concurrent fetches of one map share one call."""
        fut = self._fetching.get(map_name)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._fetching[map_name] = fut
        try:
            sums = await self.edge.router.leaf_sums(map_name)
            result = (LeafSums(sums.sums), sums.kind)
            fut.set_result(result)
            return result
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: waiters get it through their await
            raise
        finally:
            del self._fetching[map_name]

    def _views(self, session: Session) -> OrderedDict[tuple[bool, str], LeafSums]:
        views: OrderedDict[tuple[bool, str], LeafSums] | None = session.state.get("merkle")
        if views is None:
            views = session.state["merkle"] = OrderedDict()
        return views

    async def _view(self, session: Session, map_name: str, or_map: bool, fresh: bool) -> LeafSums:
        views = self._views(session)
        key = (or_map, map_name)
        if not fresh and key in views:
            return views[key]
        sums, kind = await self.fetch_view(map_name)
        wanted = MapKind.MAP_KIND_OR if or_map else MapKind.MAP_KIND_LWW
        view = sums if kind in (wanted, MapKind.MAP_KIND_UNKNOWN) else LeafSums()
        views[key] = view
        views.move_to_end(key)
        while len(views) > MAX_VIEWS_PER_SESSION:
            views.popitem(last=False)
        return view

    # -- handlers --

    async def on_sync_init(self, session: Session, msg: Message) -> None:
        map_name = str_field(msg, "mapName", "SYNC_INIT")
        await session.writes_settled()
        view = await self._view(session, map_name, False, fresh=True)
        await session.send(
            {
                "type": "SYNC_RESP_ROOT",
                "payload": {
                    "mapName": map_name,
                    "rootHash": view.root(),
                    "timestamp": self.edge.clock.now().to_wire(),
                },
            }
        )

    async def on_ormap_sync_init(self, session: Session, msg: Message) -> None:
        map_name = str_field(msg, "mapName", "ORMAP_SYNC_INIT")
        await session.writes_settled()
        view = await self._view(session, map_name, True, fresh=True)
        await session.send(
            {
                "type": "ORMAP_SYNC_RESP_ROOT",
                "payload": {
                    "mapName": map_name,
                    "rootHash": view.root(),
                    "timestamp": self.edge.clock.now().to_wire(),
                },
            }
        )

    async def on_req_bucket(self, session: Session, msg: Message) -> None:
        await self._bucket(session, msg, or_map=False)

    async def on_ormap_req_bucket(self, session: Session, msg: Message) -> None:
        await self._bucket(session, msg, or_map=True)

    async def _bucket(self, session: Session, msg: Message, *, or_map: bool) -> None:
        where = "ORMAP_MERKLE_REQ_BUCKET" if or_map else "MERKLE_REQ_BUCKET"
        body = payload_of(msg)
        map_name = str_field(body, "mapName", where)
        path = check_path(body, where)
        if len(path) == 3:
            self._queue_leaf(session, map_name, path, or_map)
            return
        view = await self._view(session, map_name, or_map, fresh=False)
        await session.send(
            {
                "type": "ORMAP_SYNC_RESP_BUCKETS" if or_map else "SYNC_RESP_BUCKETS",
                "payload": {"mapName": map_name, "path": path, "buckets": view.buckets(path)},
            }
        )

    # -- coalesced leaf fetches --

    def _queue_leaf(self, session: Session, map_name: str, path: str, or_map: bool) -> None:
        batch = self._leaf_pending.get(map_name)
        if batch is None:
            batch = self._leaf_pending[map_name] = _LeafBatch()
        batch.paths[path] = None
        batch.waiters.append((session, path, or_map))
        if not self._leaf_scheduled:
            self._leaf_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_leaves)

    def _flush_leaves(self) -> None:
        self._leaf_scheduled = False
        for map_name in list(self._leaf_pending):
            if self._leaf_inflight.get(map_name, 0) >= MAX_LEAF_CALLS_IN_FLIGHT:
                continue
            batch = self._leaf_pending.pop(map_name)
            self._leaf_inflight[map_name] = self._leaf_inflight.get(map_name, 0) + 1
            self.edge.spawn(self._fetch_leaves(map_name, batch), name=f"leaves-{map_name}")

    async def _fetch_leaves(self, map_name: str, batch: _LeafBatch) -> None:
        try:
            paths = list(batch.paths)
            pages = await self._bucket_pages(map_name, paths)
            frames: dict[tuple[str, bool], bytes] = {}
            if any(not or_map for _, _, or_map in batch.waiters):
                for path, rows in lww_rows_by_path(pages, paths).items():
                    frames[(path, False)] = lww_leaf_frame(map_name, path, rows)
            if any(or_map for _, _, or_map in batch.waiters):
                by_path = records_by_path([r for p in pages for r in records_from_batch(p)], paths)
                for path, records in by_path.items():
                    frames[(path, True)] = encode(
                        {
                            "type": "ORMAP_SYNC_RESP_LEAF",
                            "payload": {
                                "mapName": map_name,
                                "path": path,
                                "entries": or_entries(records),
                            },
                        }
                    )
            for session, path, or_map in batch.waiters:
                session.send_nowait(frames[(path, or_map)])
        except Exception as e:
            log.warning("leaf fetch of %s failed: %s", map_name, e)
            err = encode(
                {
                    "type": "ERROR",
                    "payload": {"code": 503, "message": f"Merkle leaf fetch failed: {e}"},
                }
            )
            for session in {w[0] for w in batch.waiters}:
                session.send_nowait(err)
        finally:
            n = self._leaf_inflight.get(map_name, 1) - 1
            if n:
                self._leaf_inflight[map_name] = n
            else:
                self._leaf_inflight.pop(map_name, None)
            if self._leaf_pending and not self._leaf_scheduled:
                self._leaf_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush_leaves)

    async def _bucket_pages(self, map_name: str, paths: list[str]) -> list[RecordBatch]:
        """The records under ``paths`` as raw pages: one BucketRecords call per owner (per
        ``MAX_PATHS_PER_CALL`` paths), each over the partitions the owner is primary for."""
        router = self.edge.router
        owned: dict[str, list[int]] = {}
        for p, owner in enumerate(router.table.owners):
            owned.setdefault(owner, []).append(p)
        pages: list[RecordBatch] = []
        for i in range(0, len(paths), MAX_PATHS_PER_CALL):
            chunk = paths[i : i + MAX_PATHS_PER_CALL]
            pages += await asyncio.gather(
                *(
                    router.client_of(node).bucket_records_batch(map_name, chunk, parts)
                    for node, parts in owned.items()
                )
            )
        return pages

    # -- OR-map diffs --

    async def on_ormap_diff_request(self, session: Session, msg: Message) -> None:
        body = payload_of(msg)
        map_name = str_field(body, "mapName", "ORMAP_DIFF_REQUEST")
        keys = body.get("keys")
        if type(keys) is not list or not all(type(k) is str for k in keys):
            raise BadFrame("ORMAP_DIFF_REQUEST: 'keys' must be an array of strings")
        await session.writes_settled()
        rows = await self.edge.router.get(map_name, keys) if keys else []
        found = {e["key"]: e for e in or_entries(rows)}
        entries = [found.get(k, {"key": k, "records": [], "tombstones": []}) for k in keys]
        await session.send(
            {"type": "ORMAP_DIFF_RESPONSE", "payload": {"mapName": map_name, "entries": entries}}
        )

    async def on_ormap_push_diff(self, session: Session, msg: Message) -> None:
        """Union the pushed records and the tombstones of known tags into the stored keys. No
        reply (an OP_ACK here would make the client drop unsynced ops; PROTOCOL.md 15.5)."""
        body = payload_of(msg)
        map_name = str_field(body, "mapName", "ORMAP_PUSH_DIFF")
        entries = body.get("entries")
        if type(entries) is not list:
            raise BadFrame("ORMAP_PUSH_DIFF: 'entries' must be an array")
        keys = [e["key"] for e in entries if type(e) is dict and type(e.get("key")) is str]
        if not keys:
            return
        tombstones: set[str] = set()
        for e in entries:
            if type(e) is dict and type(e.get("tombstones")) is list:
                tombstones.update(t for t in e["tombstones"] if type(t) is str)
        stored = await self.edge.router.get(map_name, keys)
        known_tags: dict[str, set[str]] = {}
        removed: set[str] = set()
        for r in stored:
            if r.kind == OR_ADD:
                known_tags.setdefault(r.key, set()).add(r.tag)
            elif r.kind == OR_REMOVE:
                removed.add(r.tag)
        ops: list[dict[str, Any]] = []
        for e in entries:
            if type(e) is not dict or type(e.get("key")) is not str:
                continue
            key = e["key"]
            have = known_tags.get(key, set())
            records = e.get("records") if type(e.get("records")) is list else []
            for rec in records:  # type: ignore[union-attr]
                if type(rec) is not dict:
                    continue
                tag = rec.get("tag")
                if (
                    type(tag) is str
                    and tag not in have
                    and tag not in removed
                    and tag not in tombstones
                ):
                    ops.append({"mapName": map_name, "key": key, "orRecord": rec})
            for tag in have & tombstones:
                ops.append({"mapName": map_name, "key": key, "orTag": tag})
        if ops:
            writes: Writes = self.edge.features["writes"]
            _, fut = await writes.submit(ops, session.origin, WriteConcern.APPLIED)
            session.track_write(fut, lambda _: [])


def install(edge: Edge) -> None:
    m = MerkleSync(edge)
    edge.features["merkle_sync"] = m
    d = edge.dispatcher
    d.add("SYNC_INIT", m.on_sync_init)
    d.add("MERKLE_REQ_BUCKET", m.on_req_bucket)
    d.add("ORMAP_SYNC_INIT", m.on_ormap_sync_init)
    d.add("ORMAP_MERKLE_REQ_BUCKET", m.on_ormap_req_bucket)
    d.add("ORMAP_DIFF_REQUEST", m.on_ormap_diff_request)
    d.add("ORMAP_PUSH_DIFF", m.on_ormap_push_diff)
