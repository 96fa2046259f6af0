"""Searches multiplexed over one long-lived SearchStream call.

A unary gRPC call costs several times what one message on an open stream costs, so a client that
searches often sends its searches down one stream, each tagged with a request id, and matches the
answers back by id. The stream is opened on first use and reopened after it breaks; a search
in flight when it breaks fails with ``SearchUnavailable`` (the caller may retry). Every search
still has its own deadline. Before (re)opening the stream the client waits a moment for the
channel to connect: a search right after the service (re)started would otherwise fail at once
while the channel sits out its reconnect backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import grpc

from libs.search_client._errors import SearchError, SearchUnavailable, translate
from topgun_rpc import search_pb2, search_pb2_grpc

CONNECT_WAIT_S = 2.0  # longest a search waits for an unconnected channel before trying anyway


class SearchStream:
    def __init__(
        self,
        stub: search_pb2_grpc.SearchStub,
        address: str,
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        self._stub = stub
        self._address = address
        self._channel = channel
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[search_pb2.SearchResponse]] = {}
        self._ids = itertools.count(1)
        self._write_lock = asyncio.Lock()

    async def request(
        self, req: search_pb2.SearchRequest, timeout: float
    ) -> search_pb2.SearchResponse:
        rid = next(self._ids)
        req.request_id = rid
        fut: asyncio.Future[search_pb2.SearchResponse] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            async with asyncio.timeout(timeout):
                async with self._write_lock:
                    if self._call is None:
                        await self._connected(min(CONNECT_WAIT_S, timeout))
                    call = self._open()
                    try:
                        await call.write(req)
                    except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as e:
                        self._reset(call)
                        raise SearchUnavailable(
                            f"search {self._address}: stream broke: {e}"
                        ) from None
                return await fut
        except TimeoutError:
            raise SearchUnavailable(
                f"search {self._address}: no answer within {timeout}s", code=None
            ) from None
        finally:
            self._pending.pop(rid, None)

    async def _connected(self, wait: float) -> None:
        channel = self._channel
        if channel is None:
            return
        if channel.get_state(try_to_connect=True) is grpc.ChannelConnectivity.READY:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(channel.channel_ready(), wait)

    def _open(self) -> Any:
        if self._call is None:
            self._call = self._stub.SearchStream()
            self._reader = asyncio.create_task(self._read(self._call), name="search-stream")
        return self._call

    async def _read(self, call: Any) -> None:
        error: SearchError = SearchUnavailable(f"search {self._address}: stream ended")
        try:
            while True:
                resp = await call.read()
                if resp is grpc.aio.EOF:  # type: ignore[attr-defined]
                    break
                fut = self._pending.get(resp.request_id)
                if fut is not None and not fut.done():
                    fut.set_result(resp)
        except grpc.aio.AioRpcError as e:
            error = translate(e, self._address)
            if not isinstance(error, SearchUnavailable):
                error = SearchUnavailable(str(error), code=error.code)
        finally:
            self._reset(call)
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(error)

    def _reset(self, call: Any) -> None:
        if self._call is call:
            self._call = None
            call.cancel()

    async def close(self) -> None:
        call, reader = self._call, self._reader
        self._call = None
        if call is not None:
            call.cancel()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
