"""The op log in memory: writes not yet acknowledged, what was sent on the current session, and
who waits for which acknowledgement.

Ops are kept in id order; acknowledgement is cumulative (``OP_ACK.lastId`` covers every op with
an id up to it, as TopGun's client reads it). At most ``max_inflight`` ops are sent and not yet
acknowledged; more wait for acks. A new session sends every unacknowledged op again (the server
applies them idempotently), and so does an ``ERROR`` 429 or 5xx, after a growing delay.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from libs.client import _protocol as proto
from libs.client._connection import NotConnected
from libs.client._maps import WriteOp
from libs.client._oplog import LocalStore

log = logging.getLogger("topgun.client")

__all__ = ["Outbox", "WriteRejected"]

APPLIED = "APPLIED"


class WriteRejected(RuntimeError):
    """The server refused a write (``OP_REJECTED`` or a failed per-op result)."""

    def __init__(self, op_id: int, reason: str) -> None:
        super().__init__(f"op {op_id} rejected: {reason}")
        self.op_id = op_id
        self.reason = reason


class Sender(Protocol):
    @property
    def ready(self) -> bool: ...

    def send_nowait(self, msg: Mapping[str, Any]) -> bool: ...


class Outbox:
    """Unacknowledged ops of one client."""

    def __init__(
        self,
        store: LocalStore,
        sender: Sender,
        *,
        max_batch: int,
        max_inflight: int,
        retry_base: float,
        retry_max: float,
    ) -> None:
        self._store = store
        self._sender = sender
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._retry_base = retry_base
        self._retry_max = retry_max
        # pending ops are _pending[_head:], ids increasing
        self._pending: list[tuple[int, dict[str, Any]]] = list(store.pending_ops())
        self._head = 0
        self._sent = 0  # pending ops (from the head) sent on the current session
        self._next_id = store.max_op_id() + 1
        self.acked_through = 0
        self._last_level: str | None = None
        self._last_op_by_map: dict[str, int] = {}
        for op_id, body in self._pending:
            self._last_op_by_map[str(body.get("mapName"))] = op_id
        self._waiters: list[tuple[int, int, asyncio.Future[str]]] = []
        self._waiter_seq = itertools.count()
        self._retry_handle: asyncio.TimerHandle | None = None
        self._retry_streak = 0

    # --- the application side ---

    def append(self, body: dict[str, Any], record_blob: bytes | None) -> WriteOp:
        op_id = self._next_id
        self._next_id += 1
        body["id"] = str(op_id)
        self._pending.append((op_id, body))
        self._store.append_op(op_id, body, record_blob)
        name = body["mapName"]
        self._last_op_by_map[name] = op_id
        return WriteOp(op_id, name, body["key"], body["opType"])

    def __len__(self) -> int:
        return len(self._pending) - self._head

    def bodies(self, map_name: str | None = None) -> Iterator[dict[str, Any]]:
        """The unacknowledged ops (of one map), oldest first."""
        for _, body in self._pending[self._head :]:
            if map_name is None or body.get("mapName") == map_name:
                yield body

    def keys_of(self, map_name: str) -> set[str]:
        return {str(body["key"]) for body in self.bodies(map_name)}

    def last_op_of(self, map_name: str) -> int:
        """The id of the last write to ``map_name`` in this process (0 if none)."""
        return self._last_op_by_map.get(map_name, 0)

    @property
    def last_op(self) -> int:
        return self._pending[-1][0] if len(self) else 0

    async def wait_acked(self, op_id: int, timeout: float | None) -> str:
        if op_id <= self.acked_through:
            return self._last_level or APPLIED
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (op_id, next(self._waiter_seq), fut))
        return await asyncio.wait_for(fut, timeout)

    # --- the session side ---

    def send(self) -> None:
        """Send what the in-flight window allows (no-op while disconnected)."""
        if not self._sender.ready:
            return
        total = len(self)
        while self._sent < total and self._sent < self._max_inflight:
            start = self._head + self._sent
            n = min(self._max_batch, total - self._sent, self._max_inflight - self._sent)
            ops = [body for _, body in self._pending[start : start + n]]
            if not self._sender.send_nowait(proto.op_batch(ops)):
                return
            self._sent += n

    def session_ready(self) -> None:
        self._sent = 0
        self.send()

    def session_lost(self) -> None:
        self._sent = 0

    def on_ack(self, msg: proto.OpAck) -> None:
        for r in msg.results:
            if not r.success and r.op_id.isdigit():
                self.reject(int(r.op_id), r.error or "rejected by the server")
        if msg.last_id.isdigit():
            last = int(msg.last_id)
        else:
            # A non-numeric id acknowledges everything sent on this session.
            sent = self._pending[self._head : self._head + self._sent]
            if not sent:
                return
            last = sent[-1][0]
        self._ack_through(last, msg.achieved_level)

    def _ack_through(self, last: int, level: str | None) -> None:
        if last > self.acked_through:
            self.acked_through = last
            self._store.ack_through(last)
        pending = self._pending
        head = self._head
        while head < len(pending) and pending[head][0] <= last:
            head += 1
        self._sent = max(0, self._sent - (head - self._head))
        self._head = head
        if head > 4096 and head * 2 > len(pending):
            del pending[:head]
            self._head = 0
        if level:
            self._last_level = level
        self._retry_streak = 0
        waiters = self._waiters
        while waiters and waiters[0][0] <= self.acked_through:
            _, _, fut = heapq.heappop(waiters)
            if not fut.done():
                fut.set_result(level or APPLIED)

    def reject(self, op_id: int, reason: str) -> None:
        """Drop an op the server refused and fail whoever waits for it."""
        log.warning("op %s rejected: %s", op_id, reason)
        for i in range(self._head, len(self._pending)):
            if self._pending[i][0] == op_id:
                del self._pending[i]
                if i - self._head < self._sent:
                    self._sent -= 1
                break
        self._store.drop_op(op_id)
        keep = []
        for item in self._waiters:
            if item[0] == op_id and not item[2].done():
                item[2].set_exception(WriteRejected(op_id, reason))
            else:
                keep.append(item)
        heapq.heapify(keep)
        self._waiters = keep

    def on_error(self, code: int) -> None:
        """The server dropped (429) or failed (5xx) a batch: ops are idempotent, so send every
        unacknowledged op again, backing off while the errors continue."""
        if not (code == 429 or code >= 500) or not self._sent or self._retry_handle is not None:
            return
        delay = min(self._retry_max, self._retry_base * 2**self._retry_streak)
        self._retry_streak += 1

        def retry() -> None:
            self._retry_handle = None
            self._sent = 0
            self.send()

        self._retry_handle = asyncio.get_running_loop().call_later(delay, retry)

    def close(self) -> None:
        if self._retry_handle is not None:
            self._retry_handle.cancel()
        for _, _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(NotConnected("the client was closed"))
        self._waiters.clear()
