"""The small messages: heartbeat, device identity, the partition map, and prompt "not available"
answers for features this server does not run (SQL, entry processors, conflict resolvers,
distributed locks), so a client calling them fails fast instead of waiting.

Messages the TypeScript client sends that need no answer (QUERY_SYNC_INIT, CLIENT_APPLY_ACK,
HYBRID_QUERY_*) are accepted silently (PROTOCOL.md 2.6, 6.5).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from services.edge.dispatch import Message
from services.edge.partition_map import PartitionMapView

if TYPE_CHECKING:
    from services.edge.edge import Edge
    from services.edge.session import Session

SQL_DISABLED = "SQL is not available: this server has no SQL engine"
ENTRY_DISABLED = "Entry processing not available: WASM sandbox required"
RESOLVERS_DISABLED = "Conflict resolvers are not available on this server"

IGNORED = (
    "QUERY_SYNC_INIT",
    "CLIENT_APPLY_ACK",
    "HYBRID_QUERY_SUBSCRIBE",
    "HYBRID_QUERY_UNSUBSCRIBE",
)


def _int(v: Any, default: int = 0) -> int:
    if type(v) is int:
        return v
    if type(v) is float and v.is_integer():
        return int(v)
    return default


def _request_id(msg: Message) -> Any:
    body = msg.get("payload") if type(msg.get("payload")) is dict else msg
    return body.get("requestId")  # type: ignore[union-attr]


class Basics:
    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.partition_map = PartitionMapView(edge.config.advertised_url, edge.config.peer_edges)

    async def on_ping(self, session: Session, msg: Message) -> None:
        await session.send(
            {
                "type": "PONG",
                "timestamp": msg.get("timestamp"),
                "serverTime": int(time.time() * 1000),
            }
        )

    async def on_device_hello(self, session: Session, msg: Message) -> None:
        ack = session.device_hello(msg.get("deviceToken"))
        if ack is not None:
            await session.send(ack)

    async def on_partition_map_request(self, session: Session, msg: Message) -> None:
        body = msg.get("payload")
        current = _int(body.get("currentVersion")) if type(body) is dict else 0
        answer = self.partition_map.answer(current, session)
        if answer is not None:
            await session.send(answer)

    async def on_sql_query(self, session: Session, msg: Message) -> None:
        body = msg.get("payload") if type(msg.get("payload")) is dict else {}
        await session.send(
            {
                "type": "SQL_QUERY_RESP",
                "payload": {
                    "queryId": body.get("queryId"),  # type: ignore[union-attr]
                    "columns": [],
                    "rows": [],
                    "error": SQL_DISABLED,
                    "code": "FEATURE_DISABLED",
                },
            }
        )

    async def on_entry_process(self, session: Session, msg: Message) -> None:
        await session.send(
            {
                "type": "ENTRY_PROCESS_RESPONSE",
                "requestId": msg.get("requestId"),
                "success": False,
                "error": ENTRY_DISABLED,
            }
        )

    async def on_entry_process_batch(self, session: Session, msg: Message) -> None:
        keys = msg.get("keys")
        results = {
            k: {"success": False, "error": ENTRY_DISABLED}
            for k in (keys if type(keys) is list else [])
            if type(k) is str
        }
        await session.send(
            {
                "type": "ENTRY_PROCESS_BATCH_RESPONSE",
                "requestId": msg.get("requestId"),
                "results": results,
            }
        )

    async def on_register_resolver(self, session: Session, msg: Message) -> None:
        await session.send(
            {
                "type": "REGISTER_RESOLVER_RESPONSE",
                "requestId": msg.get("requestId"),
                "success": False,
                "error": RESOLVERS_DISABLED,
            }
        )

    async def on_unregister_resolver(self, session: Session, msg: Message) -> None:
        await session.send(
            {
                "type": "UNREGISTER_RESOLVER_RESPONSE",
                "requestId": msg.get("requestId"),
                "success": False,
                "error": RESOLVERS_DISABLED,
            }
        )

    async def on_list_resolvers(self, session: Session, msg: Message) -> None:
        await session.send(
            {"type": "LIST_RESOLVERS_RESPONSE", "requestId": msg.get("requestId"), "resolvers": []}
        )

    async def on_lock_request(self, session: Session, msg: Message) -> None:
        body = msg.get("payload") if type(msg.get("payload")) is dict else {}
        await session.send(
            {
                "type": "LOCK_RELEASED",
                "payload": {
                    "requestId": body.get("requestId"),  # type: ignore[union-attr]
                    "name": body.get("name"),  # type: ignore[union-attr]
                    "success": False,
                },
            }
        )


def install(edge: Edge) -> None:
    b = Basics(edge)
    edge.features["basics"] = b
    d = edge.dispatcher
    d.add("PING", b.on_ping)
    d.add("DEVICE_HELLO", b.on_device_hello)
    d.add("PARTITION_MAP_REQUEST", b.on_partition_map_request)
    d.add("SQL_QUERY", b.on_sql_query)
    d.add("ENTRY_PROCESS", b.on_entry_process)
    d.add("ENTRY_PROCESS_BATCH", b.on_entry_process_batch)
    d.add("REGISTER_RESOLVER", b.on_register_resolver)
    d.add("UNREGISTER_RESOLVER", b.on_unregister_resolver)
    d.add("LIST_RESOLVERS", b.on_list_resolvers)
    d.add("LOCK_REQUEST", b.on_lock_request)
    d.add("LOCK_RELEASE", b.on_lock_request)
    d.ignore(IGNORED)
