"""The client messages the server acts on, parsed once into typed values (PROTOCOL.md 2-10).

``parse_message(msg)`` takes a map from ``decode()`` and returns one of the dataclasses below, or
raises ``BadFrame`` whose message names the field that was wrong, or ``UnknownMessageType``
for a ``type`` this module does not parse (the edge decides whether to drop or answer it).
Unknown fields are ignored: the SDK sends whole op-log entries with extra keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from libs.wire.codec import unpack_inbound_batch
from libs.wire.counters import (
    CounterRequest,
    CounterState,
    CounterSync,
    parse_counter_request,
    parse_counter_state,
    parse_counter_sync,
)
from libs.wire.errors import BadFrame
from libs.wire.fields import (
    bad,
    opt_int,
    opt_map,
    opt_str,
    req_int,
    req_str,
)
from libs.wire.http_sync import (
    HttpQuery,
    HttpSearch,
    HttpSyncRequest,
    SyncMapRequest,
    parse_http_sync_request,
)
from libs.wire.queries import (
    AGGREGATE_FUNCS,
    Aggregation,
    Query,
    QuerySub,
    QueryUnsub,
    SortSpec,
    check_predicate,
    parse_query,
    parse_query_sub,
    parse_query_unsub,
    parse_sort,
)
from libs.wire.search import (
    Search,
    SearchOptions,
    SearchSub,
    SearchUnsub,
    parse_search,
    parse_search_options,
    parse_search_sub,
    parse_search_unsub,
)
from libs.wire.stubs import (
    SqlQuery,
    StubRequest,
    parse_sql_query,
    parse_stub_request,
)
from libs.wire.sync import (
    ClientApplyAck,
    MerkleReqBucket,
    OrMapDiffRequest,
    OrMapPushDiff,
    OrMapSyncInit,
    SyncInit,
    parse_client_apply_ack,
    parse_merkle_req_bucket,
    parse_ormap_diff_request,
    parse_ormap_push_diff,
    parse_ormap_sync_init,
    parse_sync_init,
)
from libs.wire.topics import (
    MAX_TOPIC_LENGTH,
    TopicPub,
    TopicSub,
    TopicUnsub,
    parse_topic_pub,
    parse_topic_sub,
    parse_topic_unsub,
)
from libs.wire.writes import (
    ClientOp,
    OpBatch,
    OpKind,
    WriteConcern,
    op_from_wire,
    parse_client_op,
    parse_op_batch,
)


class UnknownMessageType(BadFrame):
    """A frame whose ``type`` this server does not parse; ``message_type`` holds it."""

    def __init__(self, message_type: str) -> None:
        super().__init__(f"unknown message type {message_type!r}")
        self.message_type = message_type


@dataclass(frozen=True, slots=True)
class Auth:
    token: str
    protocol_version: int | None = None
    device_token: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceHello:
    device_token: str | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    timestamp: int


def parse_auth(msg: Mapping[Any, Any]) -> Auth:
    """``AUTH {token, protocolVersion?, deviceToken?}`` (flat)."""
    return Auth(
        req_str(msg, "token"),
        opt_int(msg, "protocolVersion"),
        opt_str(msg, "deviceToken"),
    )


def parse_device_hello(msg: Mapping[Any, Any]) -> DeviceHello:
    return DeviceHello(opt_str(msg, "deviceToken"))


def parse_ping(msg: Mapping[Any, Any]) -> Ping:
    """``PING {timestamp}`` (flat); the client's epoch millis arrive as float64."""
    return Ping(req_int(msg, "timestamp"))


@dataclass(frozen=True, slots=True)
class PartitionMapRequest:
    current_version: int = 0


def parse_partition_map_request(msg: Mapping[Any, Any]) -> PartitionMapRequest:
    """``PARTITION_MAP_REQUEST {payload?: {currentVersion?}}``."""
    body = opt_map(msg, "payload")
    if body is None:
        return PartitionMapRequest()
    version = opt_int(body, "currentVersion", "payload.currentVersion")
    return PartitionMapRequest(0 if version is None else version)


@dataclass(frozen=True, slots=True)
class Batch:
    """``BATCH {count, data}`` from a client: the still-encoded inner messages."""

    items: tuple[bytes, ...]


def parse_batch(msg: Mapping[Any, Any]) -> Batch:
    """The items of an inbound ``BATCH``; ``TooLarge`` beyond 8192. Charge the rate limiter
    with ``count_inbound_batch_items(msg["data"])`` first: an oversized BATCH still costs its
    items."""
    data = msg.get("data")
    if not isinstance(data, bytes | bytearray):
        raise bad("data", "bin (u32 big-endian length + message, repeated)", data)
    return Batch(tuple(unpack_inbound_batch(data)))


ClientMessage = (
    Auth
    | DeviceHello
    | Ping
    | ClientOp
    | OpBatch
    | SyncInit
    | MerkleReqBucket
    | OrMapSyncInit
    | OrMapPushDiff
    | OrMapDiffRequest
    | ClientApplyAck
    | QuerySub
    | QueryUnsub
    | TopicSub
    | TopicUnsub
    | TopicPub
    | Search
    | SearchSub
    | SearchUnsub
    | CounterRequest
    | CounterSync
    | PartitionMapRequest
    | SqlQuery
    | StubRequest
    | Batch
)

PARSERS: dict[str, Callable[[Mapping[Any, Any]], ClientMessage]] = {
    "AUTH": parse_auth,
    "DEVICE_HELLO": parse_device_hello,
    "PING": parse_ping,
    "CLIENT_OP": parse_client_op,
    "OP_BATCH": parse_op_batch,
    "SYNC_INIT": parse_sync_init,
    "MERKLE_REQ_BUCKET": parse_merkle_req_bucket,
    "ORMAP_SYNC_INIT": parse_ormap_sync_init,
    "ORMAP_MERKLE_REQ_BUCKET": parse_merkle_req_bucket,
    "ORMAP_PUSH_DIFF": parse_ormap_push_diff,
    "ORMAP_DIFF_REQUEST": parse_ormap_diff_request,
    "CLIENT_APPLY_ACK": parse_client_apply_ack,
    "QUERY_SUB": parse_query_sub,
    "QUERY_UNSUB": parse_query_unsub,
    "TOPIC_SUB": parse_topic_sub,
    "TOPIC_UNSUB": parse_topic_unsub,
    "TOPIC_PUB": parse_topic_pub,
    "SEARCH": parse_search,
    "SEARCH_SUB": parse_search_sub,
    "SEARCH_UNSUB": parse_search_unsub,
    "COUNTER_REQUEST": parse_counter_request,
    "COUNTER_SYNC": parse_counter_sync,
    "PARTITION_MAP_REQUEST": parse_partition_map_request,
    "SQL_QUERY": parse_sql_query,
    "ENTRY_PROCESS": parse_stub_request,
    "ENTRY_PROCESS_BATCH": parse_stub_request,
    "REGISTER_RESOLVER": parse_stub_request,
    "UNREGISTER_RESOLVER": parse_stub_request,
    "LIST_RESOLVERS": parse_stub_request,
    "BATCH": parse_batch,
}


def parse_message(msg: Mapping[Any, Any]) -> ClientMessage:
    """The typed form of a decoded client message.

    Raises ``UnknownMessageType`` for a type without a parser here (``QUERY_SYNC_INIT``,
    ``HYBRID_*``, locks, journal, ...) and ``BadFrame`` for a known type of the wrong shape.
    """
    kind = msg.get("type")
    if type(kind) is not str:
        raise bad("type", "a string", kind)
    parser = PARSERS.get(kind)
    if parser is None:
        raise UnknownMessageType(kind)
    try:
        return parser(msg)
    except BadFrame as err:
        if isinstance(err, UnknownMessageType):
            raise
        raise BadFrame(f"{kind}: {err.message}", code=err.code) from None


__all__ = [
    "AGGREGATE_FUNCS",
    "MAX_TOPIC_LENGTH",
    "PARSERS",
    "Aggregation",
    "Auth",
    "Batch",
    "ClientApplyAck",
    "ClientMessage",
    "ClientOp",
    "CounterRequest",
    "CounterState",
    "CounterSync",
    "DeviceHello",
    "HttpQuery",
    "HttpSearch",
    "HttpSyncRequest",
    "MerkleReqBucket",
    "OpBatch",
    "OpKind",
    "OrMapDiffRequest",
    "OrMapPushDiff",
    "OrMapSyncInit",
    "PartitionMapRequest",
    "Ping",
    "Query",
    "QuerySub",
    "QueryUnsub",
    "Search",
    "SearchOptions",
    "SearchSub",
    "SearchUnsub",
    "SortSpec",
    "SqlQuery",
    "StubRequest",
    "SyncInit",
    "SyncMapRequest",
    "TopicPub",
    "TopicSub",
    "TopicUnsub",
    "UnknownMessageType",
    "WriteConcern",
    "check_predicate",
    "op_from_wire",
    "parse_auth",
    "parse_batch",
    "parse_client_apply_ack",
    "parse_client_op",
    "parse_counter_request",
    "parse_counter_state",
    "parse_counter_sync",
    "parse_device_hello",
    "parse_http_sync_request",
    "parse_merkle_req_bucket",
    "parse_message",
    "parse_op_batch",
    "parse_ormap_diff_request",
    "parse_ormap_push_diff",
    "parse_ormap_sync_init",
    "parse_partition_map_request",
    "parse_ping",
    "parse_query",
    "parse_query_sub",
    "parse_query_unsub",
    "parse_search",
    "parse_search_options",
    "parse_search_sub",
    "parse_search_unsub",
    "parse_sort",
    "parse_sql_query",
    "parse_stub_request",
    "parse_sync_init",
    "parse_topic_pub",
    "parse_topic_sub",
    "parse_topic_unsub",
]
