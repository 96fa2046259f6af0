"""The messages a server sends to the client, as typed, validated values (built by
:func:`libs.client._protocol.parse_server_frame`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from libs.crdt import fnv1a

__all__ = [
    "AuthAck",
    "AuthFail",
    "AuthRequired",
    "CounterState",
    "DeviceAck",
    "ErrorMessage",
    "GcPrune",
    "OpAck",
    "OpRejected",
    "OpResult",
    "OrEntry",
    "OrSyncRespBuckets",
    "OrSyncRespLeaf",
    "OrSyncRespRoot",
    "PartitionMap",
    "Pong",
    "QueryResp",
    "QueryUpdate",
    "SearchHit",
    "SearchResp",
    "SearchUpdate",
    "ServerEvent",
    "ServerMessage",
    "SyncResetRequired",
    "SyncRespBuckets",
    "SyncRespLeaf",
    "SyncRespRoot",
    "TopicMessage",
    "WireRecord",
]

WireRecord = dict[str, Any]
"""A record as it travels: ``{value, timestamp: {millis, counter, nodeId}, ttlMs?, tag?}``, with
integers normalised."""


@dataclass(frozen=True, slots=True)
class AuthRequired:
    pass


@dataclass(frozen=True, slots=True)
class AuthAck:
    user_id: str | None
    device_id: str | None
    device_token: str | None


@dataclass(frozen=True, slots=True)
class AuthFail:
    error: str
    code: int | None


@dataclass(frozen=True, slots=True)
class DeviceAck:
    device_id: str | None
    device_token: str | None


@dataclass(frozen=True, slots=True)
class Pong:
    timestamp: int
    server_time: int | None


@dataclass(frozen=True, slots=True)
class OpResult:
    op_id: str
    success: bool
    achieved_level: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class OpAck:
    last_id: str
    achieved_level: str | None
    results: tuple[OpResult, ...]


@dataclass(frozen=True, slots=True)
class OpRejected:
    op_id: str
    reason: str
    code: int | None


@dataclass(frozen=True, slots=True)
class ServerEvent:
    map_name: str
    event_type: str  # PUT | REMOVE | OR_ADD | OR_REMOVE
    key: str
    record: WireRecord | None
    or_record: WireRecord | None
    or_tag: str | None


@dataclass(frozen=True, slots=True)
class SyncRespRoot:
    map_name: str
    root_hash: int
    timestamp: WireRecord | None


@dataclass(frozen=True, slots=True)
class SyncRespBuckets:
    map_name: str
    path: str
    buckets: dict[str, int]


@dataclass(frozen=True, slots=True)
class SyncRespLeaf:
    map_name: str
    path: str
    records: tuple[tuple[str, WireRecord], ...]


@dataclass(frozen=True, slots=True)
class SyncResetRequired:
    map_name: str


@dataclass(frozen=True, slots=True)
class OrEntry:
    key: str
    records: tuple[WireRecord, ...]
    tombstones: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OrSyncRespRoot:
    map_name: str
    root_hash: int
    timestamp: WireRecord | None
    full_resync: bool


@dataclass(frozen=True, slots=True)
class OrSyncRespBuckets:
    map_name: str
    path: str
    buckets: dict[str, int]


@dataclass(frozen=True, slots=True)
class OrSyncRespLeaf:
    """``ORMAP_SYNC_RESP_LEAF`` (``path`` set) or ``ORMAP_DIFF_RESPONSE`` (``path`` is None)."""

    map_name: str
    path: str | None
    entries: tuple[OrEntry, ...]


@dataclass(frozen=True, slots=True)
class GcPrune:
    older_than: WireRecord


@dataclass(frozen=True, slots=True)
class QueryResp:
    query_id: str
    results: tuple[tuple[str, Any], ...]
    has_more: bool
    next_cursor: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class QueryUpdate:
    query_id: str
    key: str
    value: Any
    change_type: str  # ENTER | UPDATE | LEAVE


@dataclass(frozen=True, slots=True)
class TopicMessage:
    topic: str
    data: Any
    publisher_id: str | None
    timestamp: int | None


@dataclass(frozen=True, slots=True)
class SearchHit:
    key: str
    value: Any
    score: float
    matched_terms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SearchResp:
    request_id: str
    results: tuple[SearchHit, ...]
    total_count: int
    error: str | None


@dataclass(frozen=True, slots=True)
class SearchUpdate:
    subscription_id: str
    hit: SearchHit
    change_type: str


@dataclass(frozen=True, slots=True)
class CounterState:
    name: str
    positive: dict[str, float]
    negative: dict[str, float]


@dataclass(frozen=True, slots=True)
class PartitionMap:
    """Which node owns which partition (``partition = fnv1a(key) % partition_count``)."""

    version: int
    partition_count: int
    nodes: tuple[dict[str, Any], ...]
    owners: tuple[str, ...]  # owner node id per partition id
    generated_at: int | None

    def partition_of(self, key: str) -> int:
        return fnv1a(key) % self.partition_count

    def owner_of(self, key: str) -> str:
        """The node id that owns ``key``'s partition."""
        return self.owners[self.partition_of(key)]

    def endpoint_of(self, node_id: str) -> str | None:
        """The WebSocket address a node advertises, if any."""
        for n in self.nodes:
            if n.get("nodeId") == node_id:
                ep = n.get("endpoints")
                if isinstance(ep, dict) and isinstance(ep.get("websocket"), str):
                    return str(ep["websocket"])
        return None


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    code: int | None
    message: str


ServerMessage = (
    AuthRequired
    | AuthAck
    | AuthFail
    | DeviceAck
    | Pong
    | OpAck
    | OpRejected
    | ServerEvent
    | SyncRespRoot
    | SyncRespBuckets
    | SyncRespLeaf
    | SyncResetRequired
    | OrSyncRespRoot
    | OrSyncRespBuckets
    | OrSyncRespLeaf
    | GcPrune
    | QueryResp
    | QueryUpdate
    | TopicMessage
    | SearchResp
    | SearchUpdate
    | CounterState
    | PartitionMap
    | ErrorMessage
)
