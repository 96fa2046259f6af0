"""Live searches of one subscriber (an edge) over one Updates stream.

``LiveSearch.run()`` keeps the subscriber's Updates stream open (reopening it with backoff when
the search service restarts). ``subscribe`` registers a live search and hands its first results
to ``on_first`` *before* any update of it reaches ``on_update`` — updates that overtake the
Subscribe answer are held back until then. After a reconnect every live search is registered
again and the difference between what it held and its new first results is reported as LEAVEs
and ENTERs, so the caller's view stays right across a search-service restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from libs.search_client._client import SearchClient, SearchHit, SearchOptions
from libs.search_client._errors import SearchError, SearchUnavailable
from topgun_rpc import search_pb2

log = logging.getLogger(__name__)

BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0

_CHANGE_NAMES = {search_pb2.ENTER: "ENTER", search_pb2.UPDATE: "UPDATE", search_pb2.LEAVE: "LEAVE"}


@dataclass(frozen=True, slots=True)
class LiveUpdate:
    subscription_id: str
    key: str
    change_type: str  # "ENTER" | "UPDATE" | "LEAVE"
    score: float = 0.0
    matched_terms: tuple[str, ...] = ()
    value: bytes | None = None


UpdateHandler = Callable[[LiveUpdate], None]
FirstResults = Callable[[list[SearchHit]], None]


@dataclass(slots=True)
class _Sub:
    map_name: str
    query: str
    options: SearchOptions
    keys: set[str]


class LiveSearch:
    def __init__(
        self,
        client: SearchClient,
        subscriber: str,
        on_update: UpdateHandler,
        *,
        ready_timeout: float = 5.0,
    ) -> None:
        self.client = client
        self.subscriber = subscriber
        self.on_update = on_update
        self.ready_timeout = ready_timeout
        self._subs: dict[str, _Sub] = {}
        self._held: dict[str, list[LiveUpdate]] = {}  # subscribe in flight -> updates held back
        self._ready = asyncio.Event()
        self.reconnects = 0

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def __len__(self) -> int:
        return len(self._subs)

    async def run(self) -> None:
        """Keep the Updates stream open until cancelled."""
        backoff = BACKOFF_MIN
        first_connect = True
        while True:
            call = self.client.stub.Updates(search_pb2.UpdatesRequest(subscriber=self.subscriber))
            resubscribing: asyncio.Task[None] | None = None
            try:
                hello = True
                async for batch in call:
                    if hello:
                        hello = False
                        backoff = BACKOFF_MIN
                        self._ready.set()
                        if not first_connect and self._subs:
                            resubscribing = asyncio.create_task(self._resubscribe_all())
                        first_connect = False
                        continue
                    for u in batch.updates:
                        self._receive(
                            LiveUpdate(
                                u.subscription_id,
                                u.key,
                                _CHANGE_NAMES.get(u.change_type, "UPDATE"),
                                u.score,
                                tuple(u.matched_terms),
                                u.value or None,
                            )
                        )
                log.warning("search updates stream of %s ended; reopening", self.subscriber)
            except grpc.aio.AioRpcError as e:
                log.warning(
                    "search updates stream of %s broke (%s); reopening in %.1fs",
                    self.subscriber,
                    e.code().name if e.code() else "?",
                    backoff,
                )
            finally:
                self._ready.clear()
                call.cancel()
                if resubscribing is not None:
                    resubscribing.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await resubscribing
            if not first_connect:
                self.reconnects += 1
            await asyncio.sleep(backoff)
            backoff = min(BACKOFF_MAX, backoff * 2)

    def _receive(self, u: LiveUpdate) -> None:
        held = self._held.get(u.subscription_id)
        if held is not None:
            held.append(u)
            return
        self._deliver(u)

    def _deliver(self, u: LiveUpdate) -> None:
        sub = self._subs.get(u.subscription_id)
        if sub is None:
            return  # unsubscribed meanwhile
        if u.change_type == "LEAVE":
            sub.keys.discard(u.key)
        else:
            sub.keys.add(u.key)
        self.on_update(u)

    async def subscribe(
        self,
        subscription_id: str,
        map_name: str,
        query: str,
        options: SearchOptions | None = None,
        *,
        on_first: FirstResults,
        timeout: float | None = None,
    ) -> None:
        """Register a live search; ``on_first`` gets its first results before any update."""
        try:
            await asyncio.wait_for(self._ready.wait(), self.ready_timeout)
        except TimeoutError:
            raise SearchUnavailable(
                f"search {self.client.address}: no updates stream within {self.ready_timeout}s"
            ) from None
        opts = options or SearchOptions()
        self._held[subscription_id] = []
        try:
            hits = await self.client.subscribe(
                self.subscriber, subscription_id, map_name, query, opts, timeout=timeout
            )
        except BaseException:
            self._held.pop(subscription_id, None)
            raise
        self._subs[subscription_id] = _Sub(map_name, query, opts, {h.key for h in hits})
        held = self._held.pop(subscription_id, [])
        on_first(hits)
        for u in held:
            self._deliver(u)

    async def unsubscribe(self, subscription_id: str, *, timeout: float | None = None) -> None:
        if self._subs.pop(subscription_id, None) is None:
            return
        self._held.pop(subscription_id, None)
        with contextlib.suppress(SearchError):
            await self.client.unsubscribe(self.subscriber, subscription_id, timeout=timeout)

    def forget(self, subscription_id: str) -> None:
        """Stop delivering a subscription's updates at once (the caller unsubscribes later)."""
        self._subs.pop(subscription_id, None)
        self._held.pop(subscription_id, None)

    async def _resubscribe_all(self) -> None:
        for sid, sub in list(self._subs.items()):
            self._held[sid] = []
            try:
                hits = await self.client.subscribe(
                    self.subscriber, sid, sub.map_name, sub.query, sub.options
                )
            except SearchError as e:
                log.warning("re-subscribing %s after a reconnect failed: %s", sid, e)
                self._held.pop(sid, None)
                continue
            held = self._held.pop(sid, [])
            if self._subs.get(sid) is not sub:
                continue  # unsubscribed or replaced meanwhile
            now = {h.key: h for h in hits}
            for key in sorted(sub.keys - now.keys()):
                self._deliver(LiveUpdate(sid, key, "LEAVE"))
            for h in hits:
                if h.key not in sub.keys:
                    self._deliver(
                        LiveUpdate(sid, h.key, "ENTER", h.score, h.matched_terms, h.value)
                    )
            for u in held:
                self._deliver(u)
