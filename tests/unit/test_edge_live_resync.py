"""After a change-feed gap, every live query is re-read and its client gets the events that bring
it to the current rows."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack

from services.edge.change_feed import ChangeFeeds
from services.edge.config import EdgeConfig, StorageNode
from services.edge.edge import Edge
from services.edge.live_queries import LiveQueries, Snapshot
from services.edge.session import Session


class Socket:
    closed = False

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(msgpack.unpackb(data))

    async def close(self, **kw: Any) -> None:
        self.closed = True


async def wait_for_frames(ws: Socket, n: int) -> None:
    for _ in range(500):
        if len(ws.sent) >= n:
            return
        await asyncio.sleep(0.002)
    raise AssertionError(f"expected {n} frames, got {ws.sent}")


async def test_a_resumed_feed_moves_every_live_query_to_the_current_rows() -> None:
    edge = Edge(EdgeConfig(port=1, no_auth=True, storage_nodes=(StorageNode("n1", "127.0.0.1:1"),)))
    feeds = ChangeFeeds(edge)
    lq = LiveQueries(edge, feeds)
    rows = [("a", {"n": 1}), ("gone", {"n": 5})]

    async def snapshot(map_name: str, query: Any) -> Snapshot:
        return Snapshot(list(rows))

    lq.snapshot = snapshot
    ws = Socket()
    session = Session(edge, ws, 1, "test")  # type: ignore[arg-type]
    writer = asyncio.create_task(session._write_loop())
    try:
        await lq.on_query_sub(
            session, {"type": "QUERY_SUB", "payload": {"queryId": "q", "mapName": "m", "query": {}}}
        )
        await wait_for_frames(ws, 1)
        assert ws.sent[0]["type"] == "QUERY_RESP"
        rows[:] = [("a", {"n": 2}), ("b", {"n": 3})]  # what changed while the feed was down
        feeds._resumed()
        await wait_for_frames(ws, 4)
        events = {(m["payload"]["changeType"], m["payload"]["key"]) for m in ws.sent[1:]}
        assert events == {("UPDATE", "a"), ("ENTER", "b"), ("LEAVE", "gone")}
    finally:
        writer.cancel()
