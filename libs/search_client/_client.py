"""The async client of the search service's unary calls (a deadline on every one)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import grpc

from libs.rpc import RequestStream
from libs.search_client._errors import (
    QueryRejected,
    SearchError,
    SearchUnavailable,
    stream_error,
    translate,
)
from libs.storage_client import CHANNEL_OPTIONS
from topgun_rpc import search_pb2, search_pb2_grpc


@dataclass(frozen=True, slots=True)
class SearchOptions:
    """PROTOCOL.md 8 ``SearchOptions`` plus whether results carry the value."""

    limit: int = 0  # 0 = the service default (10)
    min_score: float = 0.0
    boost: Mapping[str, float] = field(default_factory=dict)
    fields: Sequence[str] = ()
    include_value: bool = True

    def to_pb(self) -> search_pb2.SearchOptions:
        return search_pb2.SearchOptions(
            limit=max(0, self.limit),
            min_score=self.min_score,
            boost=dict(self.boost),
            fields=list(self.fields),
            include_value=self.include_value,
        )


@dataclass(frozen=True, slots=True)
class SearchHit:
    key: str
    score: float
    matched_terms: tuple[str, ...]
    value: bytes | None  # msgpack of the value, when asked for


@dataclass(frozen=True, slots=True)
class SearchStatus:
    positions: dict[int, int]
    documents: dict[str, int]
    commits: int
    applied_changes: int
    feeds: int
    feeds_caught_up: int
    subscriptions: int
    rebuilds_pending: int
    rebuilds_done: int


_DEFAULT_OPTIONS_PB = SearchOptions().to_pb()

# reconnect soon after the service (re)starts: searches are answered within a request's deadline
CONNECT_WAIT_S = 2.0  # longest a search waits for an unconnected channel before trying anyway

SEARCH_CHANNEL_OPTIONS = [
    *CHANNEL_OPTIONS,
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def hits_of(resp: search_pb2.SearchResponse) -> list[SearchHit]:
    return [SearchHit(h.key, h.score, tuple(h.matched_terms), h.value or None) for h in resp.hits]


class SearchClient:
    def __init__(
        self, address: str, *, timeout: float = 5.0, channel: grpc.aio.Channel | None = None
    ) -> None:
        self.address = address
        self.timeout = timeout
        self._channel = channel or grpc.aio.insecure_channel(
            address, options=SEARCH_CHANNEL_OPTIONS
        )
        self.stub = search_pb2_grpc.SearchStub(self._channel)
        self._stream: RequestStream[search_pb2.SearchRequest, search_pb2.SearchResponse] | None = (
            None
        )

    async def close(self) -> None:
        if self._stream is not None:
            await self._stream.close()
        await self._channel.close(None)

    async def __aenter__(self) -> SearchClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return await method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.aio.AioRpcError as e:
            raise translate(e, self.address) from None

    async def search(
        self,
        map_name: str,
        query: str,
        options: SearchOptions | None = None,
        *,
        timeout: float | None = None,
    ) -> list[SearchHit]:
        """The best hits, best first; raises QueryRejected for a malformed query. A map that was
        never written has no hits. Searches share one stream to the service."""
        return hits_of(await self.search_response(map_name, query, options, timeout=timeout))

    async def search_response(
        self,
        map_name: str,
        query: str,
        options: SearchOptions | None = None,
        *,
        timeout: float | None = None,
    ) -> search_pb2.SearchResponse:
        """``search`` without converting the answer: its ``hits`` as the service sent them (a
        caller that re-encodes them anyway saves building a ``SearchHit`` per hit)."""
        req = search_pb2.SearchRequest(
            map_name=map_name,
            query=query,
            options=_DEFAULT_OPTIONS_PB if options is None else options.to_pb(),
        )
        stream = self._stream
        if stream is None:
            stream = self._stream = self._search_stream()
        return await stream.request(req, self.timeout if timeout is None else timeout)

    def _search_stream(self) -> RequestStream[search_pb2.SearchRequest, search_pb2.SearchResponse]:
        """Searches multiplexed over one SearchStream call; a search sent while the channel is
        still connecting (the edge starts beside the service) waits for it a little."""
        address = self.address

        def unavailable(code: grpc.StatusCode, why: str) -> SearchError:
            return SearchUnavailable(f"search {address}: {why}", code=code)

        def check(resp: search_pb2.SearchResponse) -> SearchError | None:
            if not resp.error:
                return None
            return QueryRejected(resp.error, code=grpc.StatusCode.INVALID_ARGUMENT)

        return RequestStream(
            self.stub.SearchStream,
            translate=lambda e: stream_error(e, address),
            unavailable=unavailable,
            check=check,
            channel=self._channel,
            connect_wait_s=CONNECT_WAIT_S,
            name="search-stream",
        )

    async def search_unary(
        self,
        map_name: str,
        query: str,
        options: SearchOptions | None = None,
        *,
        timeout: float | None = None,
    ) -> list[SearchHit]:
        """``search`` as one unary call of its own."""
        req = search_pb2.SearchRequest(
            map_name=map_name, query=query, options=(options or SearchOptions()).to_pb()
        )
        return hits_of(await self._call(self.stub.Search, req, timeout))

    async def subscribe(
        self,
        subscriber: str,
        subscription_id: str,
        map_name: str,
        query: str,
        options: SearchOptions | None = None,
        *,
        timeout: float | None = None,
    ) -> list[SearchHit]:
        """Register a live search (the subscriber's Updates stream must be open)."""
        req = search_pb2.SubscribeRequest(
            subscriber=subscriber,
            subscription_id=subscription_id,
            map_name=map_name,
            query=query,
            options=(options or SearchOptions()).to_pb(),
        )
        return hits_of(await self._call(self.stub.Subscribe, req, timeout))

    async def unsubscribe(
        self, subscriber: str, subscription_id: str, *, timeout: float | None = None
    ) -> bool:
        req = search_pb2.UnsubscribeRequest(subscriber=subscriber, subscription_id=subscription_id)
        resp = await self._call(self.stub.Unsubscribe, req, timeout)
        return bool(resp.removed)

    async def status(self, *, timeout: float | None = None) -> SearchStatus:
        r = await self._call(self.stub.Status, search_pb2.StatusRequest(), timeout)
        return SearchStatus(
            dict(r.positions),
            {m.name: m.documents for m in r.maps},
            r.commits,
            r.applied_changes,
            r.feeds,
            r.feeds_caught_up,
            r.subscriptions,
            r.rebuilds_pending,
            r.rebuilds_done,
        )

    async def rebuild(self, map_name: str, *, timeout: float | None = None) -> bool:
        """Ask for a rebuild of a map's index from a scan; False if the map is not searchable."""
        r = await self._call(
            self.stub.Rebuild, search_pb2.RebuildRequest(map_name=map_name), timeout
        )
        return bool(r.searchable)
