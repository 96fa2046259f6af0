"""Full-text search: one-shot ``search`` and live ``search_subscribe``.

A live search is answered first with a ``SEARCH_RESP`` whose request id is the subscription id,
then with ``SEARCH_UPDATE`` ENTER/UPDATE/LEAVE. The handle keeps the current hits (ordered by
score), yields snapshots as an async iterator and changes through :meth:`LiveSearch.changes`,
and is subscribed again after every reconnect.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from libs.client import _protocol as proto
from libs.client._connection import NotConnected
from libs.client._feed import Feed, Latest
from libs.client._topics import Sender

SearchHit = proto.SearchHit


@dataclass(frozen=True, slots=True)
class SearchChange:
    """One ENTER/UPDATE/LEAVE of a live search."""

    kind: str
    key: str
    hit: SearchHit | None


def search_options(
    limit: int | None, min_score: float | None, boost: Mapping[str, float] | None
) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if limit is not None:
        opts["limit"] = int(limit)
    if min_score is not None:
        opts["minScore"] = float(min_score)
    if boost:
        opts["boost"] = {str(k): float(v) for k, v in boost.items()}
    return opts


class LiveSearch:
    """The live result of one search subscription."""

    def __init__(
        self, owner: Searches, map_name: str, query: str, options: dict[str, Any], feed_size: int
    ) -> None:
        self.id = str(uuid.uuid4())
        self.map_name = map_name
        self.query = query
        self.options = options
        self._owner = owner
        self._hits: dict[str, SearchHit] = {}
        self._latest: Latest[list[SearchHit]] = Latest(self._snapshot)
        self._feeds: list[Feed[SearchChange]] = []
        self._feed_size = feed_size
        self._seen = 0
        self.settled = asyncio.Event()
        self.total_count = 0

    def _snapshot(self) -> list[SearchHit]:
        return sorted(self._hits.values(), key=lambda h: (-h.score, h.key))

    @property
    def hits(self) -> list[SearchHit]:
        """The current hits, best first."""
        return self._snapshot()

    def _emit(self, change: SearchChange) -> None:
        for feed in list(self._feeds):
            if not feed.put(change):
                self._feeds.remove(feed)

    def _on_resp(self, resp: proto.SearchResp) -> None:
        new = {h.key: h for h in resp.results}
        for key in list(self._hits):
            if key not in new:
                del self._hits[key]
                self._emit(SearchChange("LEAVE", key, None))
        for key, hit in new.items():
            old = self._hits.get(key)
            self._hits[key] = hit
            if old is None:
                self._emit(SearchChange("ENTER", key, hit))
            elif old != hit:
                self._emit(SearchChange("UPDATE", key, hit))
        self.total_count = resp.total_count
        self.settled.set()
        self._latest.bump()

    def _on_update(self, upd: proto.SearchUpdate) -> None:
        key = upd.hit.key
        if upd.change_type == "LEAVE":
            if self._hits.pop(key, None) is None:
                return
            self._emit(SearchChange("LEAVE", key, None))
        else:
            self._hits[key] = upd.hit
            self._emit(SearchChange(upd.change_type, key, upd.hit))
        self._latest.bump()

    async def ready(self, timeout: float = 10.0) -> list[SearchHit]:
        """Wait for the server's first answer; the hits then."""
        await asyncio.wait_for(self.settled.wait(), timeout)
        return self.hits

    def changes(self) -> Feed[SearchChange]:
        """A new async iterator over the ENTER/UPDATE/LEAVE changes from now on."""
        feed: Feed[SearchChange] = Feed(self._feed_size, what=f"live search {self.query!r}")
        self._feeds.append(feed)
        return feed

    def __aiter__(self) -> LiveSearch:
        return self

    async def __anext__(self) -> list[SearchHit]:
        self._seen, snap = await self._latest.next_after(self._seen)
        return snap

    async def next(self, timeout: float | None = None) -> list[SearchHit]:
        self._seen, snap = await self._latest.next_after(self._seen, timeout)
        return snap

    def close(self) -> None:
        self._owner._drop(self)
        self._latest.close()
        for feed in self._feeds:
            feed.close()

    async def __aenter__(self) -> LiveSearch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class Searches:
    """One-shot searches waiting for answers, and the live searches of one client."""

    def __init__(self, sender: Sender, *, feed_size: int = 10_000) -> None:
        self._sender = sender
        self._waiting: dict[str, asyncio.Future[proto.SearchResp]] = {}
        self._live: dict[str, LiveSearch] = {}
        self._feed_size = feed_size

    async def search(
        self, map_name: str, query: str, options: dict[str, Any], timeout: float
    ) -> proto.SearchResp:
        request_id = str(uuid.uuid4())
        fut: asyncio.Future[proto.SearchResp] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = fut
        try:
            if not await self._sender.send(proto.search(request_id, map_name, query, options)):
                raise NotConnected("search needs a connection to the server")
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiting.pop(request_id, None)

    def subscribe(self, map_name: str, query: str, options: dict[str, Any]) -> LiveSearch:
        live = LiveSearch(self, map_name, query, options, self._feed_size)
        self._live[live.id] = live
        self._sender.send_nowait(proto.search_sub(live.id, map_name, query, options))
        return live

    def _drop(self, live: LiveSearch) -> None:
        if self._live.pop(live.id, None) is not None:
            self._sender.send_nowait(proto.search_unsub(live.id))

    def on_session_ready(self) -> None:
        for live in self._live.values():
            self._sender.send_nowait(
                proto.search_sub(live.id, live.map_name, live.query, live.options)
            )

    def on_session_lost(self) -> None:
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(NotConnected("the connection dropped before the answer"))

    def on_resp(self, resp: proto.SearchResp) -> None:
        live = self._live.get(resp.request_id)
        if live is not None:
            live._on_resp(resp)
            return
        fut = self._waiting.get(resp.request_id)
        if fut is not None and not fut.done():
            fut.set_result(resp)

    def on_update(self, upd: proto.SearchUpdate) -> None:
        live = self._live.get(upd.subscription_id)
        if live is not None:
            live._on_update(upd)

    def close(self) -> None:
        for live in list(self._live.values()):
            live._latest.close()
            for feed in live._feeds:
                feed.close()
        self._live.clear()
        self.on_session_lost()
