"""RequestStream: many requests over one long-lived bidirectional gRPC stream.

A grpc.aio unary call costs about twice the CPU of a message on an open stream, on each side,
and the hot paths (an edge's Apply, a primary's Replicate) send one per batch. So they keep one
stream per peer instead: each request gets an id, the peer answers with the same id in whatever
order the answers are ready, and a reader task resolves the waiting caller.

Failures keep the meaning they have for unary calls: a request that fails as a whole is answered
with ``error_code`` (a gRPC status code) and ``error`` and raises the same ``StorageError`` the
unary call would; a broken stream fails every request in flight with ``StorageUnavailable`` and
the next request opens a new stream; a request not answered within its timeout raises
``StorageUnavailable`` (DEADLINE_EXCEEDED), and its late answer is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import grpc

from libs.storage_client._errors import StorageError, StorageUnavailable, error_for, translate


class _Request(Protocol):
    request_id: int


class _Response(Protocol):
    request_id: int
    error_code: int
    error: str


Req = TypeVar("Req", bound=_Request)
Resp = TypeVar("Resp", bound=_Response)

_CODES: dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class RequestStream(Generic[Req, Resp]):
    def __init__(self, opener: Callable[[], Any], address: str) -> None:
        """``opener`` starts the stream call (e.g. ``stub.ApplyStream``)."""
        self._opener = opener
        self.address = address
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
        call: Any = None
        try:
            async with asyncio.timeout(timeout):
                call = self._ensure_open()
                async with self._write_lock:
                    await call.write(req)
                resp = await fut
        except TimeoutError:
            raise StorageUnavailable(
                f"{self.address}: DEADLINE_EXCEEDED: no answer within {timeout:.1f}s",
                code=grpc.StatusCode.DEADLINE_EXCEEDED,
                address=self.address,
            ) from None
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as e:
            # The write failed: the stream is gone (the call's own status, which says why,
            # reaches the reader). Whether the node saw the request is unknown: retry later.
            self._pending.pop(rid, None)
            self._broken(call)
            details = e.details() if isinstance(e, grpc.aio.AioRpcError) else str(e)
            raise self._unavailable(f"the stream broke ({details})") from None
        finally:
            self._pending.pop(rid, None)
        if resp.error_code:
            code = _CODES.get(resp.error_code, grpc.StatusCode.UNKNOWN)
            raise error_for(code, resp.error, self.address)
        return resp

    def _unavailable(self, why: str) -> StorageUnavailable:
        return StorageUnavailable(
            f"{self.address}: UNAVAILABLE: {why}",
            code=grpc.StatusCode.UNAVAILABLE,
            address=self.address,
        )

    def _ensure_open(self) -> Any:
        if self._call is None:
            self._call = self._opener()
            self.opened += 1
            self._reader = asyncio.get_running_loop().create_task(
                self._read(self._call), name=f"stream-reader-{self.address}"
            )
        return self._call

    async def _read(self, call: Any) -> None:
        error: StorageError | None = None
        try:
            async for resp in call:
                fut = self._pending.pop(resp.request_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(resp)
            error = self._unavailable("the stream ended")
        except grpc.aio.AioRpcError as e:
            error = translate(e, self.address)
        except asyncio.CancelledError:
            error = self._unavailable("the stream was closed")
            raise
        finally:
            self._broken(call, error or self._unavailable("the stream failed"))

    def _broken(self, call: Any, error: StorageError | None = None) -> None:
        """Forget ``call`` (the next request opens a new stream) and fail what waits on it."""
        if self._call is not call or call is None:
            return
        self._call = None
        call.cancel()
        err = error or self._unavailable("the stream broke")
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(err)

    async def close(self) -> None:
        call, reader = self._call, self._reader
        if call is not None:
            self._broken(call, self._unavailable("the client closed"))
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
