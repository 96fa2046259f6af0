"""One client connection: the auth phase, the rate limiter, in-order dispatch, and a bounded
outbound queue drained by a writer task.

Replies to a connection's own requests wait for room in its queue (so a client that does not read
slows only its own requests); live events (SERVER_EVENT, QUERY_UPDATE, TOPIC_MESSAGE, ...) never
wait, and a connection whose queue is full when one arrives is closed as a slow consumer — the
client reconnects and re-syncs.

Write acknowledgements leave in frame order: a write frame is handed to the coalescer and the
session moves on to the next frame; the acks are released from the head of a queue as their
writes complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from libs.storage_client import StorageError
from libs.wire import ProtocolError, decode, encode
from services.edge.auth import ANONYMOUS, AuthError, Principal, unverified_principal
from services.edge.rate_limit import TokenBucket

if TYPE_CHECKING:
    from services.edge.edge import Edge

log = logging.getLogger(__name__)

RATE_LIMIT_MESSAGE = "rate limit exceeded, slow down"
YIELD_EVERY = 32  # frames handled back to back before other connections get a turn
_U32_BE = struct.Struct(">I")

Replies = list[bytes]


class Session:
    """A WebSocket connection from one client."""

    def __init__(self, edge: Edge, ws: web.WebSocketResponse, conn_id: int, remote: str) -> None:
        cfg = edge.config
        self.edge = edge
        self.ws = ws
        self.conn_id = conn_id
        self.origin = f"{edge.edge_id}/{conn_id}"
        self.remote = remote
        self.principal: Principal = ANONYMOUS
        self.authenticated = cfg.no_auth
        self.device_id: str | None = None
        self._device_seen = False
        self.bucket = TokenBucket(cfg.rate_ops_per_s, cfg.rate_burst)
        self.last_seen = time.monotonic()
        self.opened_at = self.last_seen
        self.closed = False
        self._out: asyncio.Queue[bytes] = asyncio.Queue(maxsize=cfg.outbound_queue)
        self._closers: list[Callable[[], None]] = []
        self._acks: deque[tuple[asyncio.Future[Any], Callable[[Any], Replies]]] = deque()
        self._last_write: asyncio.Future[Any] | None = None
        self._close_reason = ""
        self._close_task: asyncio.Task[None] | None = None
        self.state: dict[str, Any] = {}  # per-connection state of feature modules, by name

    # --- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.conn_id}")
        auth_timer: asyncio.TimerHandle | None = None
        try:
            if not self.authenticated:
                self.send_nowait(encode({"type": "AUTH_REQUIRED"}))
                auth_timer = asyncio.get_running_loop().call_later(
                    self.edge.config.auth_timeout_s, self._auth_expired
                )
            handled = 0
            async for frame in self.ws:
                if frame.type == aiohttp.WSMsgType.BINARY:
                    self.last_seen = time.monotonic()
                    await self.on_frame(frame.data)
                    handled += 1
                    if handled % YIELD_EVERY == 0:
                        await asyncio.sleep(0)  # a burst from one client must not starve others
                elif frame.type == aiohttp.WSMsgType.TEXT:
                    self.last_seen = time.monotonic()  # TopGun's server ignores text frames
                elif frame.type == aiohttp.WSMsgType.ERROR:
                    break
                if self.closed:
                    break
        finally:
            self.closed = True
            if auth_timer is not None:
                auth_timer.cancel()
            for fn in reversed(self._closers):
                try:
                    fn()
                except Exception:
                    log.exception("closing connection %s", self.origin)
            self._closers.clear()
            if self._close_task is not None:
                with contextlib.suppress(Exception):
                    await self._close_task
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            if not self.ws.closed:
                with contextlib.suppress(Exception):
                    await self.ws.close(message=self._close_reason.encode()[:120])

    def on_close(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` when the connection ends (unregister subscriptions and the like)."""
        self._closers.append(fn)

    def close(self, reason: str, code: int = aiohttp.WSCloseCode.OK, *, flush: bool = True) -> None:
        """Close the connection soon, with ``reason`` (from any context, never blocks). With
        ``flush`` the frames already queued (an AUTH_FAIL, say) are sent first."""
        if self.closed:
            return
        self.closed = True
        self._close_reason = reason
        log.info("closing %s (%s): %s", self.origin, self.remote, reason)
        task = asyncio.get_running_loop().create_task(self._close_ws(reason, code, flush))
        self._close_task = task

    async def _close_ws(self, reason: str, code: int, flush: bool) -> None:
        if flush:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._out.join(), 2)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()[:120]), 5)

    def _auth_expired(self) -> None:
        if not self.authenticated:
            self.close("authentication timeout", aiohttp.WSCloseCode.POLICY_VIOLATION)

    # --- outbound -----------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        q = self._out
        ws = self.ws
        metrics = self.edge.metrics.frames_out
        try:
            while True:
                frame = await q.get()
                await ws.send_bytes(frame)
                q.task_done()
                n = 1
                while not q.empty():
                    await ws.send_bytes(q.get_nowait())
                    q.task_done()
                    n += 1
                metrics.inc(n)
        except (ConnectionResetError, RuntimeError, aiohttp.ClientConnectionResetError):
            self.close("connection lost")

    async def send(self, msg: dict[str, Any]) -> None:
        """A reply to this connection's own request; waits while its queue is full."""
        await self.send_frame(encode(msg))

    async def send_frame(self, frame: bytes) -> None:
        if self.closed:
            return
        if self._out.empty():
            # nothing queued before it: write it now rather than through the writer task (the
            # bytes reach the transport before any await, so frames stay in order)
            try:
                await self.ws.send_bytes(frame)
            except (ConnectionResetError, RuntimeError, aiohttp.ClientConnectionResetError):
                self.close("connection lost")
                return
            self.edge.metrics.frames_out.inc()
            return
        await self._out.put(frame)

    def send_nowait(self, frame: bytes) -> None:
        """A live event or a deferred reply: never waits; a full queue closes the connection."""
        if self.closed:
            return
        try:
            self._out.put_nowait(frame)
        except asyncio.QueueFull:
            self.edge.metrics.slow_consumers.inc()
            self.close(
                "slow consumer: outbound queue full",
                aiohttp.WSCloseCode.TRY_AGAIN_LATER,
                flush=False,
            )

    def send_live(self, frame: bytes) -> None:
        self.send_nowait(frame)

    # --- ordered write acknowledgements ---------------------------------------------------------

    def track_write(self, fut: asyncio.Future[Any], replies: Callable[[Any], Replies]) -> None:
        """Send ``replies(fut.result())`` once ``fut`` and every earlier tracked write are done."""
        self._acks.append((fut, replies))
        self._last_write = fut
        fut.add_done_callback(self._release_acks)

    def _release_acks(self, _: asyncio.Future[Any]) -> None:
        acks = self._acks
        while acks and acks[0][0].done():
            fut, replies = acks.popleft()
            if fut.cancelled():
                continue
            try:
                frames = replies(fut.result())
            except Exception:
                log.exception("building write replies for %s", self.origin)
                frames = [encode(_error(500, "internal error while acknowledging a write"))]
            for f in frames:
                self.send_nowait(f)

    async def writes_settled(self) -> None:
        """Wait until every write this connection sent so far has been answered (read-your-writes
        for a query or sync that follows a write on the same connection)."""
        last = self._last_write
        if last is not None and not last.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(last)

    # --- inbound ------------------------------------------------------------------------------

    async def on_frame(self, data: bytes) -> None:
        cfg = self.edge.config
        try:
            msg = decode(data, max_bytes=cfg.max_frame_bytes, max_depth=cfg.max_depth)
        except ProtocolError as e:
            self.edge.metrics.bad_frames.labels(type(e).__name__).inc()
            if self.authenticated:
                await self.send(e.to_frame())
            return
        if not self.authenticated:
            if msg["type"] == "AUTH":
                await self._authenticate(msg)
            return  # everything else is dropped until the client authenticates
        if msg["type"] == "BATCH":
            await self._on_batch(msg)
            return
        if not self.bucket.try_take(self.edge.dispatcher.cost(msg)):
            self.edge.metrics.rate_limited.inc()
            await self.send(_error(429, RATE_LIMIT_MESSAGE))
            return
        await self.dispatch(msg)

    async def dispatch(self, msg: dict[str, Any]) -> None:
        t = msg["type"]
        self.edge.metrics.count_frame(t)
        if t == "AUTH":
            await self._reauthenticate(msg)
            return
        handler = self.edge.dispatcher.get(t)
        if handler is None:
            await self.send(_error(400, f"unknown message type {t[:64]!r}"))
            return
        try:
            await handler(self, msg)
        except ProtocolError as e:
            self.edge.metrics.bad_frames.labels(type(e).__name__).inc()
            await self.send(e.to_frame())
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except StorageError as e:
            log.warning("handling %s from %s: %s", t, self.origin, e)
            await self.send(_error(503, f"storage unavailable while handling {t}; retry later"))
        except Exception:
            log.exception("handling %s from %s", t, self.origin)
            await self.send(_error(500, f"internal error while handling {t}"))

    async def _on_batch(self, msg: dict[str, Any]) -> None:
        """Inbound BATCH: ``data`` holds ``[u32 BE length][message]`` items (PROTOCOL.md 1.3).
        The rate limiter charges the real item count; each item is decoded and depth-checked on
        its own, and an item that does not decode is skipped."""
        cfg = self.edge.config
        data = msg.get("data")
        if not isinstance(data, bytes | bytearray):
            await self.send(_error(400, "BATCH: 'data' must be binary"))
            return
        count = count_batch_items(data)
        if not self.bucket.try_take(count):
            self.edge.metrics.rate_limited.inc()
            await self.send(_error(429, RATE_LIMIT_MESSAGE))
            return
        if count > cfg.max_batch_items:
            await self.send(
                _error(413, f"BATCH holds {count} messages; at most {cfg.max_batch_items} allowed")
            )
            return
        view = memoryview(data)
        pos, end = 0, len(data)
        while pos + 4 <= end:
            (length,) = _U32_BE.unpack_from(view, pos)
            start, pos = pos + 4, pos + 4 + length
            if pos > end:
                break
            try:
                inner = decode(
                    view[start:pos].tobytes(),
                    max_bytes=cfg.max_frame_bytes,
                    max_depth=cfg.max_depth,
                )
            except ProtocolError as e:
                self.edge.metrics.bad_frames.labels(type(e).__name__).inc()
                continue
            if inner["type"] == "BATCH":
                continue  # no nesting of batches
            await self.dispatch(inner)
            if self.closed:
                return

    # --- authentication -----------------------------------------------------------------------

    async def _authenticate(self, msg: dict[str, Any]) -> None:
        verifier = self.edge.verifier
        assert verifier is not None
        try:
            principal = verifier.verify(msg.get("token"))
        except AuthError as e:
            error = str(e) if self.edge.config.forward_auth_errors else "Authentication failed"
            await self.send({"type": "AUTH_FAIL", "error": error})
            self.close("authentication failed", aiohttp.WSCloseCode.POLICY_VIOLATION)
            return
        self.principal = principal
        self.authenticated = True
        await self.send(self._auth_ack(msg))

    async def _reauthenticate(self, msg: dict[str, Any]) -> None:
        """AUTH after the handshake: ignored in JWT mode (the SDK sends it twice); answered in
        no-auth mode, where a token-holding client waits for AUTH_ACK (PROTOCOL.md 15.7)."""
        if not self.edge.config.no_auth:
            return
        token = msg.get("token")
        principal = unverified_principal(token)
        if self.edge.verifier is not None:
            try:
                principal = self.edge.verifier.verify(token)
            except AuthError:
                principal = ANONYMOUS
        if principal.user_id is not None:
            self.principal = principal
        await self.send(self._auth_ack(msg))

    def _auth_ack(self, msg: dict[str, Any]) -> dict[str, Any]:
        ack: dict[str, Any] = {"type": "AUTH_ACK", "protocolVersion": 1}
        if self.principal.user_id is not None:
            ack["userId"] = self.principal.user_id
        if "deviceToken" in msg and not self._device_seen:
            self._device_seen = True
            ident = self.edge.devices.present_or_mint(msg.get("deviceToken"))
            self.device_id = ident.device_id
            ack["deviceId"] = ident.device_id
            if ident.device_token is not None:
                ack["deviceToken"] = ident.device_token
        return ack

    def device_hello(self, token: Any) -> dict[str, Any] | None:
        """DEVICE_ACK for the first DEVICE_HELLO of the connection; later ones get nothing."""
        if self._device_seen:
            return None
        self._device_seen = True
        ident = self.edge.devices.present_or_mint(token)
        self.device_id = ident.device_id
        ack: dict[str, Any] = {"type": "DEVICE_ACK", "deviceId": ident.device_id}
        if ident.device_token is not None:
            ack["deviceToken"] = ident.device_token
        return ack


def count_batch_items(data: bytes | bytearray) -> int:
    """How many complete ``[u32 BE length][bytes]`` items a BATCH body holds."""
    view = memoryview(data)
    pos, end, n = 0, len(data), 0
    unpack = _U32_BE.unpack_from
    while pos + 4 <= end:
        (length,) = unpack(view, pos)
        pos += 4 + length
        if pos > end:
            break
        n += 1
    return n


def _error(code: int, message: str) -> dict[str, Any]:
    return {"type": "ERROR", "payload": {"code": code, "message": message}}
