"""The write path: CLIENT_OP and OP_BATCH -> one Apply per storage owner per tick -> OP_ACK.

Every connection's ops go into one shared columnar batch (``OpBatchBuilder``). A flush is
scheduled for the end of the current event-loop turn; while the storage calls of earlier flushes
are in flight (at most ``max_inflight_per_owner`` at a time), new ops keep collecting, so under
load a flush carries the ops of many frames and many connections, and at low load a frame leaves
at once. The router splits a flush by partition owner and sends each owner one Apply; a frame is
acknowledged once every owner answered for its ops.

Per op the edge does only what it must in Python: check the shape, normalise the timestamp
(integral floats -> int, clamp a timestamp too far in the future to the server clock), re-encode
the value, append to the columns. Partitions are computed per flush with numpy.

Replies (PROTOCOL.md 4): ``OP_REJECTED {opId, reason, code}`` for each op that could not be
applied (malformed, too large, wrong map type), then ``OP_ACK {lastId, achievedLevel}`` so the
client stops re-sending; if a storage owner could not be reached, ``ERROR 503`` and no ack (the
client re-sends, and re-applying is idempotent).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack

from libs.storage_client import OpBatchBuilder, OpStatus, StorageRouter, WriteConcern
from libs.wire import BadFrame, encode
from services.edge.dispatch import Message, payload_of
from services.edge.metrics import EdgeMetrics

if TYPE_CHECKING:
    from services.edge.edge import Edge
    from services.edge.session import Session

log = logging.getLogger(__name__)

PUT, REMOVE, OR_ADD, OR_REMOVE = 1, 2, 3, 4

# Plain ints: attribute lookups on protobuf enum wrappers cost microseconds on the hot path.
FIRE_AND_FORGET = int(WriteConcern.FIRE_AND_FORGET)
APPLIED = int(WriteConcern.APPLIED)
CONCERN_LEVELS: dict[str, int] = {
    "FIRE_AND_FORGET": FIRE_AND_FORGET,
    "MEMORY": int(WriteConcern.MEMORY),
    "APPLIED": APPLIED,
    "REPLICATED": int(WriteConcern.REPLICATED),
    "PERSISTED": int(WriteConcern.PERSISTED),
}
LEVEL_NAMES: dict[int, str] = {v: k for k, v in CONCERN_LEVELS.items()}
_RETRYABLE: frozenset[int] = frozenset({int(OpStatus.OP_NOT_OWNER), int(OpStatus.OP_UNAVAILABLE)})
_STATUS_CODES: dict[int, int] = {
    int(OpStatus.OP_INVALID): 400,
    int(OpStatus.OP_TOO_LARGE): 413,
    int(OpStatus.OP_WRONG_MAP_TYPE): 409,
}
MAX_SAFE_INT = 2**53
MAX_U32 = 2**32


@dataclass(slots=True)
class WriteOutcome:
    """How the storage owners answered for one frame's ops (indices are the frame's accepted ops)."""

    errors: dict[int, tuple[int, str]] = field(default_factory=dict)  # index -> (status, message)
    achieved: int = APPLIED
    failed: str | None = None  # the frame could not be applied at all (retry later)


@dataclass(slots=True)
class Intake:
    """One frame's ops after validation: what went into the batch and what was refused."""

    accepted_ids: list[str]
    refused: list[tuple[str, str]]  # (op id, reason)
    last_id: str


class _Frame:
    __slots__ = ("end", "future", "start")

    def __init__(self, start: int, end: int, future: asyncio.Future[WriteOutcome]) -> None:
        self.start = start
        self.end = end
        self.future = future


class _Batch:
    __slots__ = ("builder", "frames")

    def __init__(self) -> None:
        self.builder = OpBatchBuilder()
        self.frames: list[_Frame] = []


class WriteCoalescer:
    """Collects ops from every connection and flushes them to the storage owners in batches."""

    def __init__(
        self,
        router: StorageRouter,
        metrics: EdgeMetrics,
        *,
        max_inflight: int = 4,
        max_ops_per_call: int = 4096,
        timeout_s: float = 5.0,
        max_pending_ops: int = 200_000,
    ) -> None:
        self._router = router
        self._metrics = metrics
        self._max_inflight = max_inflight
        self._max_ops = max_ops_per_call
        self._timeout = timeout_s
        self._max_pending = max_pending_ops
        self._pending: dict[int, deque[_Batch]] = {}
        self._pending_ops = 0
        self._inflight = 0
        self._scheduled = False
        self._room = asyncio.Event()
        self._room.set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- filling --

    def builder(self, concern: int) -> tuple[OpBatchBuilder, int]:
        """The batch to append a frame's ops to, and where the frame starts in it."""
        q = self._pending.get(concern)
        if q is None:
            q = self._pending[concern] = deque()
        if not q or len(q[-1].builder) >= self._max_ops:
            q.append(_Batch())
        b = q[-1].builder
        return b, len(b)

    def commit(self, concern: int, start: int) -> asyncio.Future[WriteOutcome]:
        """Close a frame that appended ops from ``start`` on; its future resolves when every owner
        answered. Call right after appending (no await in between)."""
        batch = self._pending[concern][-1]
        end = len(batch.builder)
        fut: asyncio.Future[WriteOutcome] = asyncio.get_running_loop().create_future()
        if end == start:
            fut.set_result(WriteOutcome())
            return fut
        batch.frames.append(_Frame(start, end, fut))
        self._pending_ops += end - start
        if self._pending_ops >= self._max_pending:
            self._room.clear()
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return fut

    @property
    def pending_ops(self) -> int:
        """Ops accepted from clients and not yet answered by their storage owners."""
        return self._pending_ops

    async def wait_for_room(self) -> None:
        """Back-pressure: wait while too many ops are waiting for the storage owners."""
        if not self._room.is_set():
            await self._room.wait()

    # -- flushing --

    def _flush(self) -> None:
        self._scheduled = False
        for concern, q in self._pending.items():
            while q and self._inflight < self._max_inflight:
                batch = q.popleft()
                if not batch.frames:
                    continue
                self._inflight += 1
                task = asyncio.get_running_loop().create_task(self._send(concern, batch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _send(self, concern: int, batch: _Batch) -> None:
        n = len(batch.builder)
        self._metrics.apply_batch.observe(n)
        try:
            try:
                res = await self._router.apply(batch.builder, concern, timeout=self._timeout)
            except Exception as e:
                log.warning("apply of %d ops failed: %s", n, e)
                for f in batch.frames:
                    if not f.future.done():
                        f.future.set_result(WriteOutcome(failed=f"storage unavailable: {e}"))
                return
            self._resolve(batch, res.statuses, res.errors, res.achieved or APPLIED)
        finally:
            self._inflight -= 1
            self._pending_ops -= n
            if self._pending_ops < self._max_pending:
                self._room.set()
            self._flush()

    @staticmethod
    def _resolve(batch: _Batch, statuses: list[int], errors: dict[int, str], achieved: int) -> None:
        frames = batch.frames
        per_frame: dict[int, dict[int, tuple[int, str]]] = {}
        if errors:
            starts = [f.start for f in frames]
            for i, message in errors.items():
                fi = bisect.bisect_right(starts, i) - 1
                per_frame.setdefault(fi, {})[i - frames[fi].start] = (statuses[i], message)
        for fi, f in enumerate(frames):
            errs = per_frame.get(fi, {})
            failed = None
            for status, message in errs.values():
                if status in _RETRYABLE:
                    failed = message
                    break
            if not f.future.done():
                f.future.set_result(WriteOutcome(errs, achieved, failed))

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for q in self._pending.values():
            for b in q:
                for f in b.frames:
                    if not f.future.done():
                        f.future.set_result(WriteOutcome(failed="server shutting down"))
        self._pending.clear()


# --- op intake -----------------------------------------------------------------------------------


class OpIntake:
    """Validates client ops and appends them to a batch builder."""

    def __init__(self, clock_now: Callable[[], Any], max_drift_ms: int) -> None:
        self._now = clock_now  # server HLC: () -> Timestamp
        self._max_drift = max_drift_ms
        self._pack = msgpack.Packer(use_bin_type=True).pack

    def add(self, builder: OpBatchBuilder, ops: list[Any], origin: str) -> Intake:
        append = builder.append
        pack = self._pack
        now_ms = time.time_ns() // 1_000_000
        horizon = now_ms + self._max_drift
        accepted: list[str] = []
        refused: list[tuple[str, str]] = []
        op_id = "unknown"
        for op in ops:
            if type(op) is not dict:
                refused.append(("unknown", "op must be a map"))
                op_id = "unknown"
                continue
            raw_id = op.get("id")
            op_id = raw_id if type(raw_id) is str else _id_string(raw_id)
            map_name = op.get("mapName")
            key = op.get("key")
            if type(map_name) is not str or not map_name:
                refused.append((op_id, "op.mapName must be a non-empty string"))
                continue
            if type(key) is not str:
                refused.append((op_id, "op.key must be a string"))
                continue
            op_type = op.get("opType")
            record = op.get("record", _MISSING)
            if op_type == "PUT" and type(record) is dict:
                # Fast path for the SDK's common case: a PUT with a well-formed timestamp.
                ts = record.get("timestamp")
                value_obj = record.get("value")
                if type(ts) is dict and value_obj is not None and "ttlMs" not in record:
                    millis = ts.get("millis")
                    counter = ts.get("counter")
                    node = ts.get("nodeId")
                    if type(millis) is float and millis.is_integer():
                        millis = int(millis)
                    if (
                        type(millis) is int
                        and 0 <= millis < MAX_SAFE_INT
                        and type(counter) is int
                        and 0 <= counter < MAX_U32
                        and type(node) is str
                        and ":" not in node
                    ):
                        try:
                            value = pack(value_obj)
                        except (TypeError, ValueError, OverflowError) as e:
                            refused.append((op_id, f"value cannot be stored: {e}"))
                            continue
                        append(
                            map_name,
                            key,
                            PUT,
                            now_ms if millis > horizon else millis,
                            counter,
                            node,
                            value,
                            "",
                            0,
                            origin,
                        )
                        accepted.append(op_id)
                        continue
            try:
                if op_type == "REMOVE" or record is None:
                    if type(record) is dict:
                        millis, counter, node = _timestamp(record.get("timestamp"), "record")
                    else:
                        ts = self._now()
                        millis, counter, node = ts.millis, ts.counter, ts.node_id
                    if millis > horizon:
                        millis = now_ms
                    append(map_name, key, REMOVE, millis, counter, node, b"", "", 0, origin)
                elif type(op.get("orRecord")) is dict:
                    rec = op["orRecord"]
                    millis, counter, node = _timestamp(rec.get("timestamp"), "orRecord")
                    tag = rec.get("tag")
                    if tag is None:
                        tag = f"{millis}:{counter}:{node}"
                    elif type(tag) is not str or not tag:
                        raise ValueError("orRecord.tag must be a non-empty string")
                    if millis > horizon:
                        millis = now_ms
                    value = pack(rec.get("value"))
                    ttl = _ttl(rec.get("ttlMs"))
                    append(map_name, key, OR_ADD, millis, counter, node, value, tag, ttl, origin)
                elif type(op.get("orTag")) is str:
                    ts_raw = op.get("timestamp")
                    if type(ts_raw) is dict:
                        millis, counter, node = _timestamp(ts_raw, "op")
                    else:
                        ts = self._now()
                        millis, counter, node = ts.millis, ts.counter, ts.node_id
                    if millis > horizon:
                        millis = now_ms
                    append(
                        map_name, key, OR_REMOVE, millis, counter, node, b"", op["orTag"], 0, origin
                    )
                else:
                    if type(record) is not dict:
                        raise ValueError("op.record must be a map {value, timestamp}")
                    millis, counter, node = _timestamp(record.get("timestamp"), "record")
                    if millis > horizon:
                        millis = now_ms
                    value_obj = record.get("value")
                    if value_obj is None:  # a null value is a tombstone
                        append(map_name, key, REMOVE, millis, counter, node, b"", "", 0, origin)
                    else:
                        ttl = _ttl(record.get("ttlMs"))
                        append(
                            map_name,
                            key,
                            PUT,
                            millis,
                            counter,
                            node,
                            pack(value_obj),
                            "",
                            ttl,
                            origin,
                        )
            except ValueError as e:
                refused.append((op_id, str(e)))
                continue
            except (TypeError, OverflowError) as e:
                refused.append((op_id, f"value cannot be stored: {e}"))
                continue
            accepted.append(op_id)
        return Intake(accepted, refused, op_id if ops else "0")


_MISSING: Any = object()


def _id_string(raw: Any) -> str:
    if raw is None:
        return "unknown"
    if type(raw) is float and raw.is_integer():
        return str(int(raw))
    if type(raw) in (int, float):
        return str(raw)
    return "unknown"


def _timestamp(ts: Any, where: str) -> tuple[int, int, str]:
    if type(ts) is not dict:
        raise ValueError(f"{where}.timestamp must be a map {{millis, counter, nodeId}}")
    millis = ts.get("millis")
    counter = ts.get("counter")
    node = ts.get("nodeId")
    if type(millis) is not int:
        if type(millis) is float and millis.is_integer():
            millis = int(millis)
        else:
            raise ValueError(f"{where}.timestamp.millis must be an integer")
    if type(counter) is not int:
        if type(counter) is float and counter.is_integer():
            counter = int(counter)
        else:
            raise ValueError(f"{where}.timestamp.counter must be an integer")
    if type(node) is not str or ":" in node:
        raise ValueError(f"{where}.timestamp.nodeId must be a string without ':'")
    if not (0 <= millis < MAX_SAFE_INT) or not (0 <= counter < MAX_U32):
        raise ValueError(f"{where}.timestamp is out of range")
    return millis, counter, node


def _ttl(raw: Any) -> int:
    if raw is None:
        return 0
    if type(raw) is int or (type(raw) is float and raw.is_integer()):
        ttl = int(raw)
        if 0 < ttl < MAX_SAFE_INT:
            return ttl
    raise ValueError("ttlMs must be a positive integer")


def concern_of(raw: Any) -> int:
    if raw is None:
        return APPLIED
    level = CONCERN_LEVELS.get(raw) if isinstance(raw, str) else None
    if level is None:
        raise BadFrame(f"writeConcern must be one of {', '.join(CONCERN_LEVELS)}")
    return level


# --- the feature ---------------------------------------------------------------------------------


class Writes:
    """The write feature of one edge: intake + coalescer + the two message handlers."""

    def __init__(self, edge: Edge) -> None:
        cfg = edge.config
        self.edge = edge
        self.coalescer = WriteCoalescer(
            edge.router,
            edge.metrics,
            max_inflight=cfg.max_inflight_per_owner,
            max_ops_per_call=cfg.max_ops_per_call,
            timeout_s=cfg.write_timeout_ms / 1000,
        )
        self.intake = OpIntake(edge.clock.now, cfg.max_drift_ms)

    async def submit(
        self, ops: list[Any], origin: str, concern: int
    ) -> tuple[Intake, asyncio.Future[WriteOutcome]]:
        """Validate ``ops`` and queue them for their owners; the future resolves when applied."""
        await self.coalescer.wait_for_room()
        store_concern = max(concern, APPLIED)
        builder, start = self.coalescer.builder(store_concern)
        intake = self.intake.add(builder, ops, origin)
        return intake, self.coalescer.commit(store_concern, start)

    async def handle_ops(self, session: Session, ops: list[Any], concern: int) -> None:
        received = time.perf_counter()
        intake, fut = await self.submit(ops, session.origin, concern)
        metrics = self.edge.metrics
        if concern < APPLIED:
            # FIRE_AND_FORGET / MEMORY: acknowledged on receipt, applied in the background.
            session.track_write(
                _done(), lambda _: self._replies(intake, WriteOutcome(achieved=concern))
            )
            return

        def replies(outcome: WriteOutcome) -> list[bytes]:
            metrics.write_latency.observe(time.perf_counter() - received)
            return self._replies(intake, outcome)

        session.track_write(fut, replies)

    def _replies(self, intake: Intake, outcome: WriteOutcome) -> list[bytes]:
        metrics = self.edge.metrics
        if outcome.failed is not None:
            return [encode({"type": "ERROR", "payload": {"code": 503, "message": outcome.failed}})]
        frames = []
        for op_id, reason in intake.refused:
            frames.append(_rejected(op_id, reason, 400))
        for i, (status, message) in outcome.errors.items():
            frames.append(
                _rejected(intake.accepted_ids[i], message, _STATUS_CODES.get(status, 400))
            )
        rejected = len(intake.refused) + len(outcome.errors)
        if rejected:
            metrics.ops_rejected.inc(rejected)
        metrics.ops_acked.inc(len(intake.accepted_ids) - len(outcome.errors))
        frames.append(op_ack_frame(intake.last_id, outcome.achieved))
        return frames

    # -- handlers --

    async def on_client_op(self, session: Session, msg: Message) -> None:
        op = payload_of(msg)
        concern = concern_of(op.get("writeConcern"))
        await self.handle_ops(session, [op], concern)

    async def on_op_batch(self, session: Session, msg: Message) -> None:
        body = payload_of(msg)
        ops = body.get("ops")
        if type(ops) is not list:
            raise BadFrame("OP_BATCH: 'payload.ops' must be an array of ops")
        concern = concern_of(body.get("writeConcern"))
        for op in ops:
            if type(op) is dict and "writeConcern" in op:
                concern = max(concern, concern_of(op["writeConcern"]))
        await self.handle_ops(session, ops, concern)

    async def close(self) -> None:
        await self.coalescer.close()


_pack_str = msgpack.Packer(use_bin_type=True).pack
_ACK_HEAD = b"\x82" + _pack_str("type") + _pack_str("OP_ACK") + _pack_str("payload") + b"\x82"
_ACK_HEAD += _pack_str("lastId")
_ACK_TAIL = {
    level: _pack_str("achievedLevel") + _pack_str(name) for level, name in LEVEL_NAMES.items()
}


def op_ack_frame(last_id: str, achieved: int) -> bytes:
    """``OP_ACK {lastId, achievedLevel}``, one per write frame: the fixed parts are packed once."""
    tail = _ACK_TAIL.get(achieved) or _ACK_TAIL[APPLIED]
    return _ACK_HEAD + _pack_str(last_id) + tail


def _rejected(op_id: str, reason: str, code: int) -> bytes:
    return encode(
        {"type": "OP_REJECTED", "payload": {"opId": op_id, "reason": reason, "code": code}}
    )


def _done() -> asyncio.Future[WriteOutcome]:
    fut: asyncio.Future[WriteOutcome] = asyncio.get_running_loop().create_future()
    fut.set_result(WriteOutcome())
    return fut


def _batch_cost(msg: Message) -> int:
    p = msg.get("payload")
    ops = p.get("ops") if type(p) is dict else None
    return len(ops) if type(ops) is list and ops else 1


def install(edge: Edge) -> None:
    writes = Writes(edge)
    edge.features["writes"] = writes
    edge.dispatcher.add("CLIENT_OP", writes.on_client_op)
    edge.dispatcher.add("OP_BATCH", writes.on_op_batch, cost=_batch_cost)
    edge.on_stop(writes.close)
