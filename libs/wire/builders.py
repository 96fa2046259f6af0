"""Server-to-client messages, as dicts ready for ``encode()`` (PROTOCOL.md sections 2-13).

Each builder keeps its message's shape from the message index (flat or wrapped in
``payload``) and leaves optional fields out rather than sending ``nil`` where the client tests
for ``undefined``. Timestamps and records may be given as ``Timestamp`` / ``LwwRecord`` /
``OrRecord`` / ``OrEntry`` or as ready wire maps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from libs.wire.codec import pack_outbound_batch

WireMap = dict[str, Any]


class _ToWire(Protocol):
    def to_wire(self) -> dict[str, Any]: ...


def _wire(value: _ToWire | Mapping[str, Any]) -> Any:
    if isinstance(value, Mapping):
        return value
    return value.to_wire()


# --- handshake, heartbeat, errors --------------------------------------------------------------


def auth_required() -> WireMap:
    return {"type": "AUTH_REQUIRED"}


def auth_ack(
    user_id: str | None = None,
    *,
    device_id: str | None = None,
    device_token: str | None = None,
    protocol_version: int | None = None,
) -> WireMap:
    """``AUTH_ACK`` (flat); ``userId`` is the token's ``sub``."""
    msg: WireMap = {"type": "AUTH_ACK"}
    if protocol_version is not None:
        msg["protocolVersion"] = protocol_version
    if user_id is not None:
        msg["userId"] = user_id
    if device_id is not None:
        msg["deviceId"] = device_id
    if device_token is not None:
        msg["deviceToken"] = device_token
    return msg


def auth_fail(error: str = "Authentication failed", code: int | None = None) -> WireMap:
    msg: WireMap = {"type": "AUTH_FAIL", "error": error}
    if code is not None:
        msg["code"] = code
    return msg


def device_ack(device_id: str, device_token: str | None = None) -> WireMap:
    msg: WireMap = {"type": "DEVICE_ACK", "deviceId": device_id}
    if device_token is not None:
        msg["deviceToken"] = device_token
    return msg


def pong(timestamp: int, server_time: int) -> WireMap:
    """``PONG`` (flat): echoes the PING's ``timestamp``."""
    return {"type": "PONG", "timestamp": timestamp, "serverTime": server_time}


def error(code: int, message: str, details: Any = None) -> WireMap:
    """``ERROR {payload: {code, message, details?}}``."""
    body: WireMap = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return {"type": "ERROR", "payload": body}


# --- writes ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpResult:
    op_id: str
    success: bool
    achieved_level: str
    error: str | None = None

    def to_wire(self) -> WireMap:
        out: WireMap = {
            "opId": self.op_id,
            "success": self.success,
            "achievedLevel": self.achieved_level,
        }
        if self.error is not None:
            out["error"] = self.error
        return out


def op_ack(
    last_id: str,
    achieved_level: str | None = "APPLIED",
    results: Iterable[OpResult | Mapping[str, Any]] | None = None,
) -> WireMap:
    """``OP_ACK {payload: {lastId, achievedLevel?, results?}}``. ``lastId`` must be the last op's
    id: the client marks every pending op with a numeric id up to it as synced."""
    body: WireMap = {"lastId": last_id}
    if achieved_level is not None:
        body["achievedLevel"] = str(achieved_level)
    if results is not None:
        body["results"] = [_wire(r) for r in results]
    return {"type": "OP_ACK", "payload": body}


def op_rejected(op_id: str, reason: str, code: int | None = None) -> WireMap:
    body: WireMap = {"opId": op_id, "reason": reason}
    if code is not None:
        body["code"] = code
    return {"type": "OP_REJECTED", "payload": body}


def server_event(
    map_name: str,
    event_type: str,
    key: str,
    *,
    record: _ToWire | Mapping[str, Any] | None = None,
    or_record: _ToWire | Mapping[str, Any] | None = None,
    or_tag: str | None = None,
) -> WireMap:
    """``SERVER_EVENT {payload: {mapName, eventType, key, record? | orRecord?, orTag?}}``.

    Send the tombstone ``record`` with a REMOVE: the client ignores LWW events without one.
    """
    body: WireMap = {"mapName": map_name, "eventType": str(event_type), "key": key}
    if record is not None:
        body["record"] = _wire(record)
    if or_record is not None:
        body["orRecord"] = _wire(or_record)
    if or_tag is not None:
        body["orTag"] = or_tag
    return {"type": "SERVER_EVENT", "payload": body}


# --- Merkle sync -------------------------------------------------------------------------------


def sync_resp_root(
    map_name: str, root_hash: int, timestamp: _ToWire | Mapping[str, Any]
) -> WireMap:
    return {
        "type": "SYNC_RESP_ROOT",
        "payload": {"mapName": map_name, "rootHash": root_hash, "timestamp": _wire(timestamp)},
    }


def sync_resp_buckets(map_name: str, path: str, buckets: Mapping[str, int]) -> WireMap:
    """Child hashes keyed by the single next hex digit of the path."""
    return {
        "type": "SYNC_RESP_BUCKETS",
        "payload": {"mapName": map_name, "path": path, "buckets": dict(buckets)},
    }


def sync_resp_leaf(
    map_name: str, path: str, records: Iterable[tuple[str, _ToWire | Mapping[str, Any]]]
) -> WireMap:
    """Every record of a leaf, tombstones included, as ``[{key, record}]``."""
    return {
        "type": "SYNC_RESP_LEAF",
        "payload": {
            "mapName": map_name,
            "path": path,
            "records": [{"key": k, "record": _wire(r)} for k, r in records],
        },
    }


def sync_reset_required(map_name: str, reason: str | None = None) -> WireMap:
    body: WireMap = {"mapName": map_name}
    if reason is not None:
        body["reason"] = reason
    return {"type": "SYNC_RESET_REQUIRED", "payload": body}


def ormap_sync_resp_root(
    map_name: str,
    root_hash: int,
    timestamp: _ToWire | Mapping[str, Any],
    *,
    covering_epoch: int | None = None,
    full_resync: bool | None = None,
) -> WireMap:
    body: WireMap = {"mapName": map_name, "rootHash": root_hash, "timestamp": _wire(timestamp)}
    if covering_epoch:
        body["coveringEpoch"] = covering_epoch
    if full_resync is not None:
        body["fullResync"] = full_resync
    return {"type": "ORMAP_SYNC_RESP_ROOT", "payload": body}


def ormap_sync_resp_buckets(map_name: str, path: str, buckets: Mapping[str, int]) -> WireMap:
    return {
        "type": "ORMAP_SYNC_RESP_BUCKETS",
        "payload": {"mapName": map_name, "path": path, "buckets": dict(buckets)},
    }


def ormap_sync_resp_leaf(
    map_name: str,
    path: str,
    entries: Iterable[_ToWire | Mapping[str, Any]],
    *,
    covering_epoch: int | None = None,
) -> WireMap:
    body: WireMap = {"mapName": map_name, "path": path, "entries": [_wire(e) for e in entries]}
    if covering_epoch:
        body["coveringEpoch"] = covering_epoch
    return {"type": "ORMAP_SYNC_RESP_LEAF", "payload": body}


def ormap_diff_response(
    map_name: str,
    entries: Iterable[_ToWire | Mapping[str, Any]],
    *,
    covering_epoch: int | None = None,
) -> WireMap:
    body: WireMap = {"mapName": map_name, "entries": [_wire(e) for e in entries]}
    if covering_epoch:
        body["coveringEpoch"] = covering_epoch
    return {"type": "ORMAP_DIFF_RESPONSE", "payload": body}


# --- queries -----------------------------------------------------------------------------------


def query_resp(
    query_id: str,
    results: Iterable[tuple[str, Any]],
    *,
    has_more: bool | None = None,
    next_cursor: str | None = None,
    cursor_status: str | None = None,
    error: str | None = None,
    code: str | None = None,
) -> WireMap:
    """``QUERY_RESP``: ``results`` is always an array of ``{key, value}``; there is no
    ``merkleRootHash`` (the client must see it as undefined)."""
    body: WireMap = {
        "queryId": query_id,
        "results": [{"key": k, "value": v} for k, v in results],
    }
    if has_more is not None:
        body["hasMore"] = has_more
    if next_cursor is not None:
        body["nextCursor"] = next_cursor
    if cursor_status is not None:
        body["cursorStatus"] = cursor_status
    if error is not None:
        body["error"] = error
    if code is not None:
        body["code"] = code
    return {"type": "QUERY_RESP", "payload": body}


def query_update(query_id: str, key: str, value: Any, change_type: str) -> WireMap:
    """``QUERY_UPDATE``: ENTER / UPDATE carry the (projected) value, LEAVE carries nil."""
    return {
        "type": "QUERY_UPDATE",
        "payload": {
            "queryId": query_id,
            "key": key,
            "value": None if change_type == "LEAVE" else value,
            "changeType": str(change_type),
        },
    }


# --- topics and search -------------------------------------------------------------------------


def topic_message(topic: str, data: Any, publisher_id: str | None, timestamp: int) -> WireMap:
    body: WireMap = {"topic": topic, "data": data}
    if publisher_id is not None:
        body["publisherId"] = publisher_id
    body["timestamp"] = timestamp
    return {"type": "TOPIC_MESSAGE", "payload": body}


@dataclass(frozen=True, slots=True)
class SearchHit:
    key: str
    value: Any
    score: float
    matched_terms: Sequence[str]

    def to_wire(self) -> WireMap:
        return {
            "key": self.key,
            "value": self.value,
            "score": self.score,
            "matchedTerms": list(self.matched_terms),
        }


def search_resp(
    request_id: str,
    results: Iterable[SearchHit | Mapping[str, Any]],
    *,
    total_count: int | None = None,
    error: str | None = None,
) -> WireMap:
    """``SEARCH_RESP``; for a SEARCH_SUB's first answer ``request_id`` is the subscription id.
    ``totalCount`` defaults to the number of results."""
    hits = [_wire(r) for r in results]
    body: WireMap = {
        "requestId": request_id,
        "results": hits,
        "totalCount": len(hits) if total_count is None else total_count,
    }
    if error is not None:
        body["error"] = error
    return {"type": "SEARCH_RESP", "payload": body}


def search_update(
    subscription_id: str,
    key: str,
    value: Any,
    score: float,
    matched_terms: Sequence[str],
    change_type: str,
) -> WireMap:
    return {
        "type": "SEARCH_UPDATE",
        "payload": {
            "subscriptionId": subscription_id,
            "key": key,
            "value": value,
            "score": score,
            "matchedTerms": list(matched_terms),
            "changeType": str(change_type),
        },
    }


# --- counters and cluster ----------------------------------------------------------------------


def counter_state(
    positive: Mapping[str, int | float], negative: Mapping[str, int | float]
) -> WireMap:
    """A PN counter state under both pairs of names: ``p``/``n`` (schema) and
    ``positive``/``negative`` (what the client reads)."""
    pos, neg = dict(positive), dict(negative)
    return {"p": pos, "n": neg, "positive": dict(pos), "negative": dict(neg)}


def counter_response(
    name: str, positive: Mapping[str, int | float], negative: Mapping[str, int | float]
) -> WireMap:
    return {
        "type": "COUNTER_RESPONSE",
        "payload": {"name": name, "state": counter_state(positive, negative)},
    }


def counter_update(
    name: str, positive: Mapping[str, int | float], negative: Mapping[str, int | float]
) -> WireMap:
    return {
        "type": "COUNTER_UPDATE",
        "payload": {"name": name, "state": counter_state(positive, negative)},
    }


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: str
    websocket: str
    http: str | None = None
    status: str = "ACTIVE"

    def to_wire(self) -> WireMap:
        endpoints: WireMap = {"websocket": self.websocket}
        if self.http is not None:
            endpoints["http"] = self.http
        return {"nodeId": self.node_id, "endpoints": endpoints, "status": self.status}


def partition_map(
    version: int,
    nodes: Iterable[NodeInfo | Mapping[str, Any]],
    owners: Sequence[str],
    backups: Sequence[Sequence[str]] | None,
    generated_at: int,
) -> WireMap:
    """``PARTITION_MAP``: ``owners[p]`` is the node id owning partition ``p`` (one entry per
    partition) and ``backups[p]`` its backup node ids."""
    partitions = [
        {
            "partitionId": pid,
            "ownerNodeId": owner,
            "backupNodeIds": list(backups[pid]) if backups is not None else [],
        }
        for pid, owner in enumerate(owners)
    ]
    return {
        "type": "PARTITION_MAP",
        "payload": {
            "version": version,
            "partitionCount": len(owners),
            "nodes": [_wire(n) for n in nodes],
            "partitions": partitions,
            "generatedAt": generated_at,
        },
    }


# --- features this server answers with "not available" ----------------------------------------

SQL_DISABLED_MESSAGE = "SQL is not available: this server has no SQL engine"
ENTRY_PROCESSING_DISABLED_MESSAGE = "Entry processing not available: WASM sandbox required"
RESOLVERS_DISABLED_MESSAGE = "Conflict resolvers are not available on this server"


def sql_query_resp_disabled(query_id: str, message: str = SQL_DISABLED_MESSAGE) -> WireMap:
    """``SQL_QUERY_RESP`` with ``code: "FEATURE_DISABLED"`` (the client rejects with SqlError)."""
    return {
        "type": "SQL_QUERY_RESP",
        "payload": {
            "queryId": query_id,
            "columns": [],
            "rows": [],
            "error": message,
            "code": "FEATURE_DISABLED",
        },
    }


def entry_process_response(
    request_id: str, error: str = ENTRY_PROCESSING_DISABLED_MESSAGE
) -> WireMap:
    """``ENTRY_PROCESS_RESPONSE`` (flat) with ``success: false``."""
    return {
        "type": "ENTRY_PROCESS_RESPONSE",
        "requestId": request_id,
        "success": False,
        "error": error,
    }


def entry_process_batch_response(
    request_id: str, keys: Iterable[str], error: str = ENTRY_PROCESSING_DISABLED_MESSAGE
) -> WireMap:
    """``ENTRY_PROCESS_BATCH_RESPONSE`` (flat): every key failed with ``error``."""
    return {
        "type": "ENTRY_PROCESS_BATCH_RESPONSE",
        "requestId": request_id,
        "results": {k: {"success": False, "error": error} for k in keys},
    }


def register_resolver_response(request_id: str, error: str = RESOLVERS_DISABLED_MESSAGE) -> WireMap:
    return {
        "type": "REGISTER_RESOLVER_RESPONSE",
        "requestId": request_id,
        "success": False,
        "error": error,
    }


def unregister_resolver_response(
    request_id: str, error: str = RESOLVERS_DISABLED_MESSAGE
) -> WireMap:
    return {
        "type": "UNREGISTER_RESOLVER_RESPONSE",
        "requestId": request_id,
        "success": False,
        "error": error,
    }


def list_resolvers_response(request_id: str) -> WireMap:
    return {"type": "LIST_RESOLVERS_RESPONSE", "requestId": request_id, "resolvers": []}


def stub_response(request_type: str, request_id: str, keys: Iterable[str] = ()) -> WireMap | None:
    """The "not available" reply to a ``StubRequest`` of ``request_type``."""
    if request_type == "ENTRY_PROCESS":
        return entry_process_response(request_id)
    if request_type == "ENTRY_PROCESS_BATCH":
        return entry_process_batch_response(request_id, keys)
    if request_type == "REGISTER_RESOLVER":
        return register_resolver_response(request_id)
    if request_type == "UNREGISTER_RESOLVER":
        return unregister_resolver_response(request_id)
    if request_type == "LIST_RESOLVERS":
        return list_resolvers_response(request_id)
    return None


def batch(frames: Sequence[bytes]) -> WireMap:
    """``BATCH {count, data}`` in the layout the client unpacks (encoded frames, in order)."""
    return {"type": "BATCH", "count": len(frames), "data": pack_outbound_batch(frames)}


__all__ = [
    "ENTRY_PROCESSING_DISABLED_MESSAGE",
    "RESOLVERS_DISABLED_MESSAGE",
    "SQL_DISABLED_MESSAGE",
    "NodeInfo",
    "OpResult",
    "SearchHit",
    "WireMap",
    "auth_ack",
    "auth_fail",
    "auth_required",
    "batch",
    "counter_response",
    "counter_state",
    "counter_update",
    "device_ack",
    "entry_process_batch_response",
    "entry_process_response",
    "error",
    "list_resolvers_response",
    "op_ack",
    "op_rejected",
    "ormap_diff_response",
    "ormap_sync_resp_buckets",
    "ormap_sync_resp_leaf",
    "ormap_sync_resp_root",
    "partition_map",
    "pong",
    "query_resp",
    "query_update",
    "register_resolver_response",
    "search_resp",
    "search_update",
    "server_event",
    "stub_response",
    "sync_reset_required",
    "sync_resp_buckets",
    "sync_resp_leaf",
    "sync_resp_root",
    "topic_message",
    "unregister_resolver_response",
]
