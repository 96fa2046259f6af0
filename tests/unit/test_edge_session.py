"""A connection's outbound side without a network: write acks leave in frame order, a consumer
that stops reading is disconnected instead of buffered without limit, and queued replies are
flushed before a close."""

from __future__ import annotations

import asyncio
from typing import Any

from services.edge.config import EdgeConfig, StorageNode
from services.edge.edge import Edge
from services.edge.session import Session


class StuckSocket:
    """A WebSocket whose peer never reads: every send waits forever."""

    def __init__(self) -> None:
        self.closed = False
        self.close_message: bytes | None = None
        self.sent: list[bytes] = []
        self.unblock = asyncio.Event()

    async def send_bytes(self, data: bytes) -> None:
        await self.unblock.wait()
        self.sent.append(data)

    async def close(self, *, code: int = 1000, message: bytes = b"") -> None:
        self.closed = True
        self.close_message = message


async def session(queue: int = 8) -> tuple[Session, StuckSocket]:
    cfg = EdgeConfig(
        port=1,
        no_auth=True,
        outbound_queue=queue,
        storage_nodes=(StorageNode("n1", "127.0.0.1:1"),),
    )
    ws = StuckSocket()
    return Session(Edge(cfg), ws, 1, "test"), ws  # type: ignore[arg-type]


async def test_a_consumer_that_stops_reading_is_closed_as_slow() -> None:
    s, ws = await session(queue=8)
    writer = asyncio.create_task(s._write_loop())
    try:
        for i in range(20):
            s.send_live(b"event-%d" % i)
        await asyncio.sleep(0)
        assert s.closed
        ws.unblock.set()
        await asyncio.wait_for(s._close_task, 5)  # type: ignore[arg-type]
        assert ws.closed and ws.close_message is not None and b"slow consumer" in ws.close_message
    finally:
        writer.cancel()


async def test_write_acks_leave_in_frame_order_whatever_order_the_writes_finish_in() -> None:
    s, ws = await session(queue=64)
    ws.unblock.set()
    writer = asyncio.create_task(s._write_loop())
    loop = asyncio.get_running_loop()
    futs: list[asyncio.Future[Any]] = [loop.create_future() for _ in range(3)]
    try:
        for i, f in enumerate(futs):
            s.track_write(f, lambda outcome, i=i: [b"ack-%d" % i])
        futs[2].set_result(None)
        futs[1].set_result(None)
        await asyncio.sleep(0.01)
        assert ws.sent == []  # the first write is still open: nothing may overtake it
        futs[0].set_result(None)
        for _ in range(100):
            if len(ws.sent) == 3:
                break
            await asyncio.sleep(0.001)
        assert ws.sent == [b"ack-0", b"ack-1", b"ack-2"]
    finally:
        writer.cancel()


async def test_replies_queued_before_a_close_are_sent_before_the_socket_closes() -> None:
    s, ws = await session(queue=64)
    writer = asyncio.create_task(s._write_loop())
    try:
        s.send_nowait(b"AUTH_FAIL")
        s.close("authentication failed")
        await asyncio.sleep(0.01)
        assert not ws.closed  # still waiting for the queued frame to go out
        ws.unblock.set()
        await asyncio.wait_for(s._close_task, 5)  # type: ignore[arg-type]
        assert ws.sent == [b"AUTH_FAIL"] and ws.closed
    finally:
        writer.cancel()
