"""RequestStream: many requests over one long-lived bidirectional gRPC stream.

A grpc.aio unary call costs about twice the CPU of a message on an open stream, on each side,
and the hot paths (an edge's Apply, a primary's Replicate, an edge's searches) send one per
request. So they keep one stream per peer instead: each request gets an id, the peer answers with
the same id in whatever order the answers are ready, and a reader task resolves the waiting
caller.

The client's own error types stay its own, through three callbacks: ``translate`` turns the
stream's gRPC error into the exception a request in flight raises; ``unavailable(code, why)``
makes the one for a stream that broke (UNAVAILABLE) or a request not answered in time
(DEADLINE_EXCEEDED), where whether the peer saw the request is unknown, so retry later; and
``check`` returns the exception for an answer that reports a failure of its request (or None).
A broken stream fails every request in flight; the next request opens a new one. With a
``channel`` and ``connect_wait_s``, opening a stream first waits (that long at most) for the
channel to connect, so that a request sent while the peer is still starting is not failed at
once. A late answer to a request that timed out is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import grpc

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


class _Request(Protocol):
    request_id: int


class _Response(Protocol):
    request_id: int


Req = TypeVar("Req", bound=_Request)
Resp = TypeVar("Resp", bound=_Response)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class RequestStream(Generic[Req, Resp]):
    def __init__(
        self,
        opener: Callable[[], Any],
        *,
        translate: Callable[[grpc.aio.AioRpcError], Exception],
        unavailable: Callable[[grpc.StatusCode, str], Exception],
        check: Callable[[Resp], Exception | None] | None = None,
        channel: grpc.aio.Channel | None = None,
        connect_wait_s: float = 0.0,
        name: str = "stream",
    ) -> None:
        """``opener`` starts the stream call (e.g. ``stub.ApplyStream``)."""
        self._opener = opener
        self._translate = translate
        self._unavailable = unavailable
        self._check = check
        self._channel = channel
        self._connect_wait_s = connect_wait_s
        self._name = name
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Resp]] = {}
        self._next_id = 0
        self._write_lock = asyncio.Lock()
        self.opened = 0  # streams opened so far (1 while nothing broke)

    async def request(self, req: Req, timeout: float) -> Resp:
        self._next_id += 1
        rid = self._next_id
        req.request_id = rid
        fut: asyncio.Future[Resp] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_retrieve)  # failed by a broken stream after its caller left
        self._pending[rid] = fut
        try:
            async with asyncio.timeout(timeout):
                async with self._write_lock:
                    call = await self._ensure_open(timeout)
                    try:
                        await call.write(req)
                    except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as e:
                        # The stream is gone (the call's own status, which says why, reaches
                        # the reader); whether the peer saw the request is unknown.
                        self._pending.pop(rid, None)
                        self._broken(call)
                        details = e.details() if isinstance(e, grpc.aio.AioRpcError) else str(e)
                        raise self._unavailable(
                            UNAVAILABLE, f"the stream broke ({details})"
                        ) from None
                resp = await fut
        except TimeoutError:
            raise self._unavailable(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer within {timeout:.1f}s"
            ) from None
        finally:
            self._pending.pop(rid, None)
        if self._check is not None:
            failed = self._check(resp)
            if failed is not None:
                raise failed
        return resp

    async def _ensure_open(self, timeout: float) -> Any:
        if self._call is None:
            channel = self._channel
            if channel is not None and self._connect_wait_s > 0:
                state = channel.get_state(try_to_connect=True)
                if state is not grpc.ChannelConnectivity.READY:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(min(self._connect_wait_s, timeout)):
                            await channel.channel_ready()
            self._call = self._opener()
            self.opened += 1
            self._reader = asyncio.get_running_loop().create_task(
                self._read(self._call), name=f"{self._name}-reader"
            )
        return self._call

    async def _read(self, call: Any) -> None:
        error: Exception | None = None
        try:
            async for resp in call:
                fut = self._pending.pop(resp.request_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(resp)
            error = self._unavailable(UNAVAILABLE, "the stream ended")
        except grpc.aio.AioRpcError as e:
            error = self._translate(e)
        except asyncio.CancelledError:
            error = self._unavailable(UNAVAILABLE, "the stream was closed")
            raise
        finally:
            self._broken(call, error or self._unavailable(UNAVAILABLE, "the stream failed"))

    def _broken(self, call: Any, error: Exception | None = None) -> None:
        """Forget ``call`` (the next request opens a new stream) and fail what waits on it."""
        if self._call is not call or call is None:
            return
        self._call = None
        call.cancel()
        err = error or self._unavailable(UNAVAILABLE, "the stream broke")
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(err)

    async def close(self) -> None:
        call, reader = self._call, self._reader
        if call is not None:
            self._broken(call, self._unavailable(UNAVAILABLE, "the client closed"))
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
