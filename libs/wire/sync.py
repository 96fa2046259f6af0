"""Merkle delta sync requests, LWW and OR-map (PROTOCOL.md section 5)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from libs.wire.errors import BadFrame
from libs.wire.fields import (
    bad,
    opt_int,
    opt_str_list,
    payload,
    req_int,
    req_str,
    to_int,
)
from libs.wire.records import (
    OrEntry,
    entries_from_wire,
)


@dataclass(frozen=True, slots=True)
class SyncInit:
    map_name: str
    last_sync_timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class MerkleReqBucket:
    """``MERKLE_REQ_BUCKET`` or, with ``or_map``, ``ORMAP_MERKLE_REQ_BUCKET``."""

    map_name: str
    path: str
    or_map: bool = False


@dataclass(frozen=True, slots=True)
class OrMapSyncInit:
    map_name: str
    root_hash: int
    bucket_hashes: dict[str, int]
    last_sync_timestamp: int | None = None
    claimed_epoch: int | None = None


@dataclass(frozen=True, slots=True)
class OrMapPushDiff:
    map_name: str
    entries: tuple[OrEntry, ...]


@dataclass(frozen=True, slots=True)
class OrMapDiffRequest:
    map_name: str
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ClientApplyAck:
    cursor: int


def parse_sync_init(msg: Mapping[Any, Any]) -> SyncInit:
    """``SYNC_INIT {mapName, lastSyncTimestamp?}`` (flat)."""
    return SyncInit(req_str(msg, "mapName"), opt_int(msg, "lastSyncTimestamp"))


def parse_merkle_req_bucket(msg: Mapping[Any, Any]) -> MerkleReqBucket:
    """``MERKLE_REQ_BUCKET`` / ``ORMAP_MERKLE_REQ_BUCKET {payload: {mapName, path}}``."""
    body = payload(msg)
    return MerkleReqBucket(
        req_str(body, "mapName", "payload.mapName"),
        req_str(body, "path", "payload.path"),
        msg.get("type") == "ORMAP_MERKLE_REQ_BUCKET",
    )


def _hash(value: Any, field: str) -> int:
    h = to_int(value, field)
    if not 0 <= h < 2**32:
        raise BadFrame(f"{field} must be an unsigned 32-bit hash, got {h}")
    return h


def parse_ormap_sync_init(msg: Mapping[Any, Any]) -> OrMapSyncInit:
    """``ORMAP_SYNC_INIT {mapName, rootHash, bucketHashes, lastSyncTimestamp?, claimedEpoch?}``
    (flat). A missing ``rootHash`` reads as 0 (an empty client tree)."""
    root = msg.get("rootHash")
    raw_buckets = msg.get("bucketHashes")
    buckets: dict[str, int] = {}
    if raw_buckets is not None:
        if not isinstance(raw_buckets, Mapping):
            raise bad("bucketHashes", "a map of hex digit to hash", raw_buckets)
        for k, v in raw_buckets.items():
            if type(k) is not str:
                raise bad("bucketHashes key", "a string", k)
            buckets[k] = _hash(v, f"bucketHashes.{k}")
    return OrMapSyncInit(
        req_str(msg, "mapName"),
        0 if root is None else _hash(root, "rootHash"),
        buckets,
        opt_int(msg, "lastSyncTimestamp"),
        opt_int(msg, "claimedEpoch"),
    )


def parse_ormap_push_diff(msg: Mapping[Any, Any]) -> OrMapPushDiff:
    """``ORMAP_PUSH_DIFF {payload: {mapName, entries}}``."""
    body = payload(msg)
    return OrMapPushDiff(
        req_str(body, "mapName", "payload.mapName"),
        entries_from_wire(body.get("entries"), "payload.entries"),
    )


def parse_ormap_diff_request(msg: Mapping[Any, Any]) -> OrMapDiffRequest:
    """``ORMAP_DIFF_REQUEST {payload: {mapName, keys}}``."""
    body = payload(msg)
    return OrMapDiffRequest(
        req_str(body, "mapName", "payload.mapName"),
        opt_str_list(body, "keys", "payload.keys") or (),
    )


def parse_client_apply_ack(msg: Mapping[Any, Any]) -> ClientApplyAck:
    return ClientApplyAck(req_int(msg, "cursor"))


__all__ = [
    "ClientApplyAck",
    "MerkleReqBucket",
    "OrMapDiffRequest",
    "OrMapPushDiff",
    "OrMapSyncInit",
    "SyncInit",
    "parse_client_apply_ack",
    "parse_merkle_req_bucket",
    "parse_ormap_diff_request",
    "parse_ormap_push_diff",
    "parse_ormap_sync_init",
    "parse_sync_init",
]
