"""Builders for the messages the client sends (PROTOCOL.md), shaped as TopGun's TypeScript
client shapes them: flat or ``{type, payload}`` per message type, camelCase fields."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from libs.wire import encode

__all__ = [
    "auth",
    "counter_request",
    "counter_sync",
    "device_hello",
    "encode_message",
    "merkle_req_bucket",
    "op_batch",
    "ormap_merkle_req_bucket",
    "ormap_push_diff",
    "ormap_sync_init",
    "partition_map_request",
    "ping",
    "query_sub",
    "query_unsub",
    "search",
    "search_sub",
    "search_unsub",
    "sync_init",
    "topic_pub",
    "topic_sub",
    "topic_unsub",
]


def encode_message(msg: Mapping[str, Any]) -> bytes:
    """One client message as the bytes of one binary WebSocket frame."""
    return encode(msg)


def auth(token: str, device_token: str | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "AUTH", "token": token}
    if device_token:
        msg["deviceToken"] = device_token
    return msg


def device_hello(device_token: str | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "DEVICE_HELLO"}
    if device_token:
        msg["deviceToken"] = device_token
    return msg


def ping(now_ms: int) -> dict[str, Any]:
    return {"type": "PING", "timestamp": now_ms}


def op_batch(
    ops: Sequence[Mapping[str, Any]],
    write_concern: str | None = None,
    timeout_ms: int | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {"ops": list(ops)}
    if write_concern:
        payload["writeConcern"] = write_concern
    if timeout_ms is not None:
        payload["timeout"] = timeout_ms
    return {"type": "OP_BATCH", "payload": payload}


def sync_init(map_name: str, last_sync_timestamp: int = 0) -> dict[str, Any]:
    return {"type": "SYNC_INIT", "mapName": map_name, "lastSyncTimestamp": last_sync_timestamp}


def merkle_req_bucket(map_name: str, path: str) -> dict[str, Any]:
    return {"type": "MERKLE_REQ_BUCKET", "payload": {"mapName": map_name, "path": path}}


def ormap_sync_init(
    map_name: str, root_hash: int, bucket_hashes: Mapping[str, int], last_sync_timestamp: int = 0
) -> dict[str, Any]:
    return {
        "type": "ORMAP_SYNC_INIT",
        "mapName": map_name,
        "rootHash": root_hash,
        "bucketHashes": dict(bucket_hashes),
        "lastSyncTimestamp": last_sync_timestamp,
        "claimedEpoch": 0,
    }


def ormap_merkle_req_bucket(map_name: str, path: str) -> dict[str, Any]:
    return {"type": "ORMAP_MERKLE_REQ_BUCKET", "payload": {"mapName": map_name, "path": path}}


def ormap_push_diff(map_name: str, entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"type": "ORMAP_PUSH_DIFF", "payload": {"mapName": map_name, "entries": list(entries)}}


def query_sub(
    query_id: str, map_name: str, query: Mapping[str, Any], fields: Sequence[str] | None = None
) -> dict[str, Any]:
    payload: dict[str, Any] = {"queryId": query_id, "mapName": map_name, "query": dict(query)}
    if fields:
        payload["fields"] = list(fields)
    return {"type": "QUERY_SUB", "payload": payload}


def query_unsub(query_id: str) -> dict[str, Any]:
    return {"type": "QUERY_UNSUB", "payload": {"queryId": query_id}}


def topic_sub(topic: str) -> dict[str, Any]:
    return {"type": "TOPIC_SUB", "payload": {"topic": topic}}


def topic_unsub(topic: str) -> dict[str, Any]:
    return {"type": "TOPIC_UNSUB", "payload": {"topic": topic}}


def topic_pub(topic: str, data: Any) -> dict[str, Any]:
    return {"type": "TOPIC_PUB", "payload": {"topic": topic, "data": data}}


def search(
    request_id: str, map_name: str, query: str, options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    payload: dict[str, Any] = {"requestId": request_id, "mapName": map_name, "query": query}
    if options:
        payload["options"] = dict(options)
    return {"type": "SEARCH", "payload": payload}


def search_sub(
    subscription_id: str, map_name: str, query: str, options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "subscriptionId": subscription_id,
        "mapName": map_name,
        "query": query,
    }
    if options:
        payload["options"] = dict(options)
    return {"type": "SEARCH_SUB", "payload": payload}


def search_unsub(subscription_id: str) -> dict[str, Any]:
    return {"type": "SEARCH_UNSUB", "payload": {"subscriptionId": subscription_id}}


def counter_request(name: str) -> dict[str, Any]:
    return {"type": "COUNTER_REQUEST", "payload": {"name": name}}


def counter_sync(name: str, state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` as :meth:`libs.crdt.PNCounter.to_wire` writes it (both spellings of the maps)."""
    return {"type": "COUNTER_SYNC", "payload": {"name": name, "state": dict(state)}}


def partition_map_request(current_version: int = 0) -> dict[str, Any]:
    return {"type": "PARTITION_MAP_REQUEST", "payload": {"currentVersion": current_version}}
