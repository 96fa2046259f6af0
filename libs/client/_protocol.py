"""The client side of the wire protocol: one parser that turns server frames into the typed
messages of :mod:`._server_messages`; the client's own messages are built in
:mod:`._client_messages` (re-exported here, so callers use ``_protocol`` for both).

Server frames are validated here, once: a frame that is not MsgPack, has an unknown ``type`` or a
field of the wrong shape raises :class:`BadServerFrame`, which the connection logs and drops.
Everything past this module works on typed messages. Integral floats (how the TypeScript side
writes large numbers) are normalised to ``int`` wherever an integer is meant.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

from libs.client._client_messages import *  # noqa: F403
from libs.client._client_messages import __all__ as _client_names
from libs.client._server_messages import *  # noqa: F403
from libs.client._server_messages import (
    AuthAck,
    AuthFail,
    AuthRequired,
    CounterState,
    DeviceAck,
    ErrorMessage,
    GcPrune,
    OpAck,
    OpRejected,
    OpResult,
    OrEntry,
    OrSyncRespBuckets,
    OrSyncRespLeaf,
    OrSyncRespRoot,
    PartitionMap,
    Pong,
    QueryResp,
    QueryUpdate,
    SearchHit,
    SearchResp,
    SearchUpdate,
    ServerEvent,
    ServerMessage,
    SyncResetRequired,
    SyncRespBuckets,
    SyncRespLeaf,
    SyncRespRoot,
    TopicMessage,
    WireRecord,
)
from libs.client._server_messages import __all__ as _server_names
from libs.wire import ProtocolError, decode

__all__ = ["BadServerFrame", "parse_server_frame", *_client_names, *_server_names]


class BadServerFrame(ValueError):
    """A server frame the client cannot use; logged and dropped, never fatal."""


# Types the client knows and deliberately ignores (no use for them in this SDK).
_IGNORED = frozenset(
    {
        "MERGE_REJECTED",
        "SHUTDOWN_PENDING",
        "PARTITION_MAP_DELTA",
        "LOCK_GRANTED",
        "LOCK_RELEASED",
        "JOURNAL_EVENT",
        "JOURNAL_READ_RESPONSE",
        "SQL_QUERY_RESP",
        "HYBRID_SEARCH_RESP",
        "HYBRID_SEARCH_UPDATE",
        "VECTOR_SEARCH_RESP",
        "ENTRY_PROCESS_RESPONSE",
        "ENTRY_PROCESS_BATCH_RESPONSE",
        "REGISTER_RESOLVER_RESPONSE",
        "UNREGISTER_RESOLVER_RESPONSE",
        "LIST_RESOLVERS_RESPONSE",
    }
)

_MAX_BATCH_ITEMS = 65_536
MAX_FRAME_BYTES = 64 * 1024 * 1024
"""Largest server frame accepted (a big query answer can be many megabytes)."""
MAX_DEPTH = 512


# --- field validation --------------------------------------------------------------------------


def _fail(what: str) -> BadServerFrame:
    return BadServerFrame(what)


def _map(v: Any, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _fail(f"{what}: expected a map, got {type(v).__name__}")
    return v


def _str(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise _fail(f"{what}: expected a string, got {type(v).__name__}")
    return v


def _opt_str(v: Any, what: str) -> str | None:
    return None if v is None else _str(v, what)


def _int(v: Any, what: str) -> int:
    if isinstance(v, bool):
        raise _fail(f"{what}: expected an integer, got a boolean")
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    raise _fail(f"{what}: expected an integer, got {v!r}")


def _opt_int(v: Any, what: str) -> int | None:
    return None if v is None else _int(v, what)


def _num(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _fail(f"{what}: expected a number, got {v!r}")
    return v


def _list(v: Any, what: str) -> list[Any]:
    if not isinstance(v, list | tuple):
        raise _fail(f"{what}: expected an array, got {type(v).__name__}")
    return list(v)


def _u32(v: Any, what: str) -> int:
    n = _int(v, what)
    if not 0 <= n <= 0xFFFFFFFF:
        raise _fail(f"{what}: {n} is not a 32-bit hash")
    return n


def _timestamp(v: Any, what: str) -> dict[str, Any]:
    m = _map(v, what)
    return {
        "millis": _int(m.get("millis"), f"{what}.millis"),
        "counter": _int(m.get("counter"), f"{what}.counter"),
        "nodeId": _str(m.get("nodeId"), f"{what}.nodeId"),
    }


def _lww_record(v: Any, what: str) -> WireRecord:
    m = _map(v, what)
    rec: WireRecord = {
        "value": m.get("value"),
        "timestamp": _timestamp(m.get("timestamp"), f"{what}.timestamp"),
    }
    ttl = m.get("ttlMs")
    if ttl is not None:
        rec["ttlMs"] = _int(ttl, f"{what}.ttlMs")
    return rec


def _or_record(v: Any, what: str) -> WireRecord:
    m = _map(v, what)
    rec: WireRecord = {
        "value": m.get("value"),
        "timestamp": _timestamp(m.get("timestamp"), f"{what}.timestamp"),
        "tag": _str(m.get("tag"), f"{what}.tag"),
    }
    if "ttlMs" in m:
        ttl = m["ttlMs"]
        rec["ttlMs"] = None if ttl is None else _int(ttl, f"{what}.ttlMs")
    return rec


def _buckets(v: Any, what: str) -> dict[str, int]:
    m = _map(v, what)
    out: dict[str, int] = {}
    for k, h in m.items():
        ks = str(k)
        if len(ks) != 1 or ks not in "0123456789abcdef":
            raise _fail(f"{what}: bucket key {k!r} is not one hex digit")
        out[ks] = _u32(h, f"{what}[{ks}]")
    return out


def _or_entry(v: Any, what: str) -> OrEntry:
    m = _map(v, what)
    return OrEntry(
        key=_str(m.get("key"), f"{what}.key"),
        records=tuple(
            _or_record(r, f"{what}.records[{i}]")
            for i, r in enumerate(_list(m.get("records", []), f"{what}.records"))
        ),
        tombstones=tuple(
            _str(t, f"{what}.tombstones[]")
            for t in _list(m.get("tombstones", []), f"{what}.tombstones")
        ),
    )


def _hit(m: dict[str, Any], what: str) -> SearchHit:
    return SearchHit(
        key=_str(m.get("key"), f"{what}.key"),
        value=m.get("value"),
        score=float(_num(m.get("score", 0.0), f"{what}.score")),
        matched_terms=tuple(
            _str(t, f"{what}.matchedTerms[]")
            for t in _list(m.get("matchedTerms") or [], f"{what}.matchedTerms")
        ),
    )


# --- per-type parsers (each gets the decoded top-level map) ----------------------------------


def _payload(msg: dict[str, Any], t: str) -> dict[str, Any]:
    return _map(msg.get("payload"), f"{t}.payload")


def _p_auth_ack(m: dict[str, Any]) -> AuthAck:
    return AuthAck(
        user_id=_opt_str(m.get("userId"), "AUTH_ACK.userId"),
        device_id=_opt_str(m.get("deviceId"), "AUTH_ACK.deviceId"),
        device_token=_opt_str(m.get("deviceToken"), "AUTH_ACK.deviceToken"),
    )


def _p_auth_fail(m: dict[str, Any]) -> AuthFail:
    err = m.get("error")
    return AuthFail(
        error=err if isinstance(err, str) else "authentication failed",
        code=_opt_int(m.get("code"), "AUTH_FAIL.code"),
    )


def _p_device_ack(m: dict[str, Any]) -> DeviceAck:
    return DeviceAck(
        device_id=_opt_str(m.get("deviceId"), "DEVICE_ACK.deviceId"),
        device_token=_opt_str(m.get("deviceToken"), "DEVICE_ACK.deviceToken"),
    )


def _p_pong(m: dict[str, Any]) -> Pong:
    return Pong(
        timestamp=_int(m.get("timestamp"), "PONG.timestamp"),
        server_time=_opt_int(m.get("serverTime"), "PONG.serverTime"),
    )


def _p_op_ack(m: dict[str, Any]) -> OpAck:
    p = _payload(m, "OP_ACK")
    last = p.get("lastId")
    if isinstance(last, int | float) and not isinstance(last, bool):
        last = str(_int(last, "OP_ACK.lastId"))
    results = []
    for i, r in enumerate(_list(p.get("results") or [], "OP_ACK.results")):
        rm = _map(r, f"OP_ACK.results[{i}]")
        op_id = rm.get("opId")
        results.append(
            OpResult(
                op_id=str(op_id),
                success=bool(rm.get("success", True)),
                achieved_level=_opt_str(rm.get("achievedLevel"), "OP_ACK.results.achievedLevel"),
                error=_opt_str(rm.get("error"), "OP_ACK.results.error"),
            )
        )
    return OpAck(
        last_id=_str(last, "OP_ACK.lastId"),
        achieved_level=_opt_str(p.get("achievedLevel"), "OP_ACK.achievedLevel"),
        results=tuple(results),
    )


def _p_op_rejected(m: dict[str, Any]) -> OpRejected:
    p = _payload(m, "OP_REJECTED")
    return OpRejected(
        op_id=str(p.get("opId")),
        reason=str(p.get("reason", "")),
        code=_opt_int(p.get("code"), "OP_REJECTED.code"),
    )


def _server_event(p: dict[str, Any], what: str) -> ServerEvent:
    et = _str(p.get("eventType"), f"{what}.eventType")
    if et not in ("PUT", "REMOVE", "OR_ADD", "OR_REMOVE"):
        raise _fail(f"{what}.eventType: unknown {et!r}")
    rec = p.get("record")
    orec = p.get("orRecord")
    return ServerEvent(
        map_name=_str(p.get("mapName"), f"{what}.mapName"),
        event_type=et,
        key=_str(p.get("key"), f"{what}.key"),
        record=None if rec is None else _lww_record(rec, f"{what}.record"),
        or_record=None if orec is None else _or_record(orec, f"{what}.orRecord"),
        or_tag=_opt_str(p.get("orTag"), f"{what}.orTag"),
    )


def _p_server_event(m: dict[str, Any]) -> ServerEvent:
    return _server_event(_payload(m, "SERVER_EVENT"), "SERVER_EVENT")


def _p_sync_resp_root(m: dict[str, Any]) -> SyncRespRoot:
    p = _payload(m, "SYNC_RESP_ROOT")
    ts = p.get("timestamp")
    return SyncRespRoot(
        map_name=_str(p.get("mapName"), "SYNC_RESP_ROOT.mapName"),
        root_hash=_u32(p.get("rootHash", 0), "SYNC_RESP_ROOT.rootHash"),
        timestamp=None if ts is None else _timestamp(ts, "SYNC_RESP_ROOT.timestamp"),
    )


def _p_sync_resp_buckets(m: dict[str, Any]) -> SyncRespBuckets:
    p = _payload(m, "SYNC_RESP_BUCKETS")
    return SyncRespBuckets(
        map_name=_str(p.get("mapName"), "SYNC_RESP_BUCKETS.mapName"),
        path=_str(p.get("path"), "SYNC_RESP_BUCKETS.path"),
        buckets=_buckets(p.get("buckets", {}), "SYNC_RESP_BUCKETS.buckets"),
    )


def _p_sync_resp_leaf(m: dict[str, Any]) -> SyncRespLeaf:
    p = _payload(m, "SYNC_RESP_LEAF")
    recs = []
    for i, r in enumerate(_list(p.get("records", []), "SYNC_RESP_LEAF.records")):
        rm = _map(r, f"SYNC_RESP_LEAF.records[{i}]")
        recs.append(
            (
                _str(rm.get("key"), f"SYNC_RESP_LEAF.records[{i}].key"),
                _lww_record(rm.get("record"), f"SYNC_RESP_LEAF.records[{i}].record"),
            )
        )
    return SyncRespLeaf(
        map_name=_str(p.get("mapName"), "SYNC_RESP_LEAF.mapName"),
        path=_str(p.get("path"), "SYNC_RESP_LEAF.path"),
        records=tuple(recs),
    )


def _p_sync_reset(m: dict[str, Any]) -> SyncResetRequired:
    p = _payload(m, "SYNC_RESET_REQUIRED")
    return SyncResetRequired(map_name=_str(p.get("mapName"), "SYNC_RESET_REQUIRED.mapName"))


def _p_or_root(m: dict[str, Any]) -> OrSyncRespRoot:
    p = _payload(m, "ORMAP_SYNC_RESP_ROOT")
    ts = p.get("timestamp")
    return OrSyncRespRoot(
        map_name=_str(p.get("mapName"), "ORMAP_SYNC_RESP_ROOT.mapName"),
        root_hash=_u32(p.get("rootHash", 0), "ORMAP_SYNC_RESP_ROOT.rootHash"),
        timestamp=None if ts is None else _timestamp(ts, "ORMAP_SYNC_RESP_ROOT.timestamp"),
        full_resync=bool(p.get("fullResync", False)),
    )


def _p_or_buckets(m: dict[str, Any]) -> OrSyncRespBuckets:
    p = _payload(m, "ORMAP_SYNC_RESP_BUCKETS")
    return OrSyncRespBuckets(
        map_name=_str(p.get("mapName"), "ORMAP_SYNC_RESP_BUCKETS.mapName"),
        path=_str(p.get("path"), "ORMAP_SYNC_RESP_BUCKETS.path"),
        buckets=_buckets(p.get("buckets", {}), "ORMAP_SYNC_RESP_BUCKETS.buckets"),
    )


def _p_or_leaf(m: dict[str, Any]) -> OrSyncRespLeaf:
    t = str(m.get("type"))
    p = _payload(m, t)
    path = None if t == "ORMAP_DIFF_RESPONSE" else _str(p.get("path"), f"{t}.path")
    return OrSyncRespLeaf(
        map_name=_str(p.get("mapName"), f"{t}.mapName"),
        path=path,
        entries=tuple(
            _or_entry(e, f"{t}.entries[{i}]")
            for i, e in enumerate(_list(p.get("entries", []), f"{t}.entries"))
        ),
    )


def _p_gc_prune(m: dict[str, Any]) -> GcPrune:
    p = _payload(m, "GC_PRUNE")
    return GcPrune(older_than=_timestamp(p.get("olderThan"), "GC_PRUNE.olderThan"))


def _p_query_resp(m: dict[str, Any]) -> QueryResp:
    p = _payload(m, "QUERY_RESP")
    rows = []
    for i, r in enumerate(_list(p.get("results", []), "QUERY_RESP.results")):
        rm = _map(r, f"QUERY_RESP.results[{i}]")
        rows.append((_str(rm.get("key"), f"QUERY_RESP.results[{i}].key"), rm.get("value")))
    err = p.get("error")
    return QueryResp(
        query_id=_str(p.get("queryId"), "QUERY_RESP.queryId"),
        results=tuple(rows),
        has_more=bool(p.get("hasMore", False)),
        next_cursor=_opt_str(p.get("nextCursor"), "QUERY_RESP.nextCursor"),
        error=None if err is None else str(err),
    )


def _p_query_update(m: dict[str, Any]) -> QueryUpdate:
    p = _payload(m, "QUERY_UPDATE")
    ct = _str(p.get("changeType"), "QUERY_UPDATE.changeType")
    if ct not in ("ENTER", "UPDATE", "LEAVE"):
        raise _fail(f"QUERY_UPDATE.changeType: unknown {ct!r}")
    return QueryUpdate(
        query_id=_str(p.get("queryId"), "QUERY_UPDATE.queryId"),
        key=_str(p.get("key"), "QUERY_UPDATE.key"),
        value=p.get("value"),
        change_type=ct,
    )


def _p_topic_message(m: dict[str, Any]) -> TopicMessage:
    p = _payload(m, "TOPIC_MESSAGE")
    ts = p.get("timestamp")
    return TopicMessage(
        topic=_str(p.get("topic"), "TOPIC_MESSAGE.topic"),
        data=p.get("data"),
        publisher_id=_opt_str(p.get("publisherId"), "TOPIC_MESSAGE.publisherId"),
        timestamp=ts
        if type(ts) is int
        else int(ts)
        if isinstance(ts, float) and ts.is_integer()
        else None,
    )


def _p_search_resp(m: dict[str, Any]) -> SearchResp:
    p = _payload(m, "SEARCH_RESP")
    hits = tuple(
        _hit(_map(r, f"SEARCH_RESP.results[{i}]"), f"SEARCH_RESP.results[{i}]")
        for i, r in enumerate(_list(p.get("results", []), "SEARCH_RESP.results"))
    )
    total = p.get("totalCount")
    err = p.get("error")
    return SearchResp(
        request_id=_str(p.get("requestId"), "SEARCH_RESP.requestId"),
        results=hits,
        total_count=len(hits) if total is None else _int(total, "SEARCH_RESP.totalCount"),
        error=None if err is None else str(err),
    )


def _p_search_update(m: dict[str, Any]) -> SearchUpdate:
    p = _payload(m, "SEARCH_UPDATE")
    ct = _str(p.get("changeType"), "SEARCH_UPDATE.changeType")
    if ct not in ("ENTER", "UPDATE", "LEAVE"):
        raise _fail(f"SEARCH_UPDATE.changeType: unknown {ct!r}")
    return SearchUpdate(
        subscription_id=_str(p.get("subscriptionId"), "SEARCH_UPDATE.subscriptionId"),
        hit=_hit(p, "SEARCH_UPDATE"),
        change_type=ct,
    )


def _counts(v: Any, what: str) -> dict[str, float]:
    return {str(k): _num(n, f"{what}[{k}]") for k, n in _map(v or {}, what).items()}


def _p_counter(m: dict[str, Any]) -> CounterState:
    t = str(m.get("type"))
    p = _payload(m, t)
    state = _map(p.get("state"), f"{t}.state")
    pos = state["positive"] if "positive" in state else state.get("p")
    neg = state["negative"] if "negative" in state else state.get("n")
    return CounterState(
        name=_str(p.get("name"), f"{t}.name"),
        positive=_counts(pos, f"{t}.state.positive"),
        negative=_counts(neg, f"{t}.state.negative"),
    )


def _p_partition_map(m: dict[str, Any]) -> PartitionMap:
    p = _payload(m, "PARTITION_MAP")
    count = _int(p.get("partitionCount", 271), "PARTITION_MAP.partitionCount")
    if not 0 < count <= 65_536:
        raise _fail(f"PARTITION_MAP.partitionCount: {count} out of range")
    owners = [""] * count
    for i, e in enumerate(_list(p.get("partitions", []), "PARTITION_MAP.partitions")):
        em = _map(e, f"PARTITION_MAP.partitions[{i}]")
        pid = _int(em.get("partitionId"), f"PARTITION_MAP.partitions[{i}].partitionId")
        if not 0 <= pid < count:
            raise _fail(f"PARTITION_MAP.partitions[{i}].partitionId: {pid} out of range")
        owners[pid] = _str(em.get("ownerNodeId"), f"PARTITION_MAP.partitions[{i}].ownerNodeId")
    nodes = tuple(
        _map(n, f"PARTITION_MAP.nodes[{i}]")
        for i, n in enumerate(_list(p.get("nodes", []), "PARTITION_MAP.nodes"))
    )
    return PartitionMap(
        version=_int(p.get("version"), "PARTITION_MAP.version"),
        partition_count=count,
        nodes=nodes,
        owners=tuple(owners),
        generated_at=_opt_int(p.get("generatedAt"), "PARTITION_MAP.generatedAt"),
    )


def _p_error(m: dict[str, Any]) -> ErrorMessage:
    p = m.get("payload")
    p = p if isinstance(p, dict) else m
    code = p.get("code")
    return ErrorMessage(
        code=code if isinstance(code, int) and not isinstance(code, bool) else None,
        message=str(p.get("message", "")),
    )


_PARSERS: dict[str, Any] = {
    "AUTH_REQUIRED": lambda m: AuthRequired(),
    "AUTH_ACK": _p_auth_ack,
    "AUTH_FAIL": _p_auth_fail,
    "DEVICE_ACK": _p_device_ack,
    "PONG": _p_pong,
    "OP_ACK": _p_op_ack,
    "OP_REJECTED": _p_op_rejected,
    "SERVER_EVENT": _p_server_event,
    "SYNC_RESP_ROOT": _p_sync_resp_root,
    "SYNC_RESP_BUCKETS": _p_sync_resp_buckets,
    "SYNC_RESP_LEAF": _p_sync_resp_leaf,
    "SYNC_RESET_REQUIRED": _p_sync_reset,
    "ORMAP_SYNC_RESP_ROOT": _p_or_root,
    "ORMAP_SYNC_RESP_BUCKETS": _p_or_buckets,
    "ORMAP_SYNC_RESP_LEAF": _p_or_leaf,
    "ORMAP_DIFF_RESPONSE": _p_or_leaf,
    "GC_PRUNE": _p_gc_prune,
    "QUERY_RESP": _p_query_resp,
    "QUERY_UPDATE": _p_query_update,
    "TOPIC_MESSAGE": _p_topic_message,
    "SEARCH_RESP": _p_search_resp,
    "SEARCH_UPDATE": _p_search_update,
    "COUNTER_RESPONSE": _p_counter,
    "COUNTER_UPDATE": _p_counter,
    "PARTITION_MAP": _p_partition_map,
    "ERROR": _p_error,
}


def _unpack_batch(data: bytes) -> Iterator[bytes]:
    """The client-side BATCH layout: ``[u32 count][u32 len][msg]...``, little-endian."""
    if len(data) < 4:
        raise _fail("BATCH.data: shorter than its count")
    (n,) = struct.unpack_from("<I", data, 0)
    if n > _MAX_BATCH_ITEMS:
        raise _fail(f"BATCH: {n} items is more than {_MAX_BATCH_ITEMS}")
    off = 4
    for i in range(n):
        if off + 4 > len(data):
            raise _fail(f"BATCH: item {i} truncated")
        (size,) = struct.unpack_from("<I", data, off)
        off += 4
        if off + size > len(data):
            raise _fail(f"BATCH: item {i} truncated")
        yield data[off : off + size]
        off += size


def _parse_map(msg: Any) -> list[ServerMessage]:
    if not isinstance(msg, dict):
        raise _fail(f"frame is a {type(msg).__name__}, not a map")
    t = msg.get("type")
    if not isinstance(t, str):
        raise _fail("frame has no string 'type'")
    if t == "SERVER_BATCH_EVENT":
        p = _payload(msg, t)
        return [
            _server_event(_map(e, f"{t}.events[{i}]"), f"{t}.events[{i}]")
            for i, e in enumerate(_list(p.get("events", []), f"{t}.events"))
        ]
    parser = _PARSERS.get(t)
    if parser is None:
        if t in _IGNORED:
            return []
        raise _fail(f"unknown message type {t!r}")
    return [parser(msg)]


def parse_server_frame(frame: bytes | str) -> list[ServerMessage]:
    """Decode one WebSocket frame into the messages it carries (a BATCH carries several).

    Raises :class:`BadServerFrame` for the whole frame if it cannot be decoded; inside a BATCH a
    bad item also fails the frame, since the items' order matters.
    """
    if isinstance(frame, str):
        try:
            msg = json.loads(frame)
        except ValueError as e:
            raise _fail(f"text frame is not JSON: {e}") from None
    else:
        try:
            msg = decode(frame, max_bytes=MAX_FRAME_BYTES, max_depth=MAX_DEPTH)
        except ProtocolError as e:
            raise _fail(f"undecodable frame: {e.message}") from None
    if isinstance(msg, dict) and msg.get("type") == "BATCH":
        data = msg.get("data")
        if not isinstance(data, bytes | bytearray):
            raise _fail("BATCH.data: expected bytes")
        out: list[ServerMessage] = []
        for item in _unpack_batch(bytes(data)):
            out.extend(parse_server_frame(item))
        return out
    return _parse_map(msg)
