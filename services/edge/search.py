"""Full-text search: SEARCH -> SEARCH_RESP, SEARCH_SUB -> SEARCH_RESP then SEARCH_UPDATEs,
SEARCH_UNSUB (PROTOCOL.md 8), answered by the search service over gRPC.

Every connection's live searches ride this edge's one Updates stream from the search service
(``libs.search_client.LiveSearch``) under an edge-wide id ``<connection>:<subscriptionId>``.
A SEARCH_SUB's first answer is a SEARCH_RESP whose ``requestId`` is the subscription id, and it
always leaves before the subscription's first SEARCH_UPDATE. Updates go to the subscriber even
when it made the write. Results carry the value. A malformed query is answered with a
SEARCH_RESP carrying ``error`` (and no results); a map never written has no results.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

from libs.search_client import (
    LiveSearch,
    LiveUpdate,
    QueryRejected,
    SearchClient,
    SearchError,
    SearchHit,
    SearchOptions,
    SearchUnavailable,
)
from libs.wire import SearchOptions as WireSearchOptions
from libs.wire import (
    parse_search,
    parse_search_sub,
    parse_search_unsub,
)
from services.edge.dispatch import Message
from services.edge.live_queries import unpack_value
from services.edge.search_frames import search_resp_frame, search_update_frame

if TYPE_CHECKING:
    from services.edge.edge import Edge
    from services.edge.session import Session

log = logging.getLogger(__name__)

UNAVAILABLE = "search is not available on this server"


def _options(o: WireSearchOptions) -> SearchOptions | None:
    """The service's options for a client's; None for the defaults (results carry the value)."""
    if o.limit is None and o.min_score is None and o.boost is None and o.fields is None:
        return None
    return SearchOptions(
        limit=o.limit or 0,
        min_score=o.min_score or 0.0,
        boost={k: float(v) for k, v in (o.boost or {}).items()},
        fields=tuple(o.fields or ()),
        include_value=True,
    )


class EdgeSearch:
    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        address = edge.config.search
        self.client = SearchClient(address, timeout=edge.config.rpc_timeout_s) if address else None
        self.live: LiveSearch | None = None
        if self.client is not None:
            subscriber = f"{edge.edge_id}-{secrets.token_hex(4)}"
            self.live = LiveSearch(self.client, subscriber, self._on_update)
        self._subs: dict[str, tuple[Session, str]] = {}  # edge-wide id -> (session, client's id)

    def start(self) -> None:
        if self.live is not None and self.client is not None:
            self.edge.spawn(self.live.run(), name="search-updates")
            self.edge.on_stop(self.client.close)

    async def search_results(
        self, map_name: str, query: str, options: WireSearchOptions
    ) -> list[dict[str, Any]]:
        """One search's results as SEARCH_RESP carries them, values decoded (for callers that
        build their own reply, like HTTP sync). Raises ``QueryRejected`` for a malformed query
        and ``SearchError`` when the service is missing or fails."""
        if self.client is None:
            raise SearchUnavailable(UNAVAILABLE)
        resp = await self.client.search_response(map_name, query, _options(options))
        return [
            {
                "key": h.key,
                "value": unpack_value(h.value),
                "score": h.score,
                "matchedTerms": list(h.matched_terms),
            }
            for h in resp.hits
        ]

    async def on_search(self, session: Session, msg: Message) -> None:
        req = parse_search(msg)
        rid = req.request_id
        if self.client is None:
            await session.send_frame(search_resp_frame(rid, [], error=UNAVAILABLE))
            return
        try:
            resp = await self.client.search_response(req.map_name, req.query, _options(req.options))
        except QueryRejected as e:
            await session.send_frame(search_resp_frame(rid, [], error=str(e)))
            return
        except SearchError as e:
            log.warning("SEARCH on %r failed: %s", req.map_name, e)
            await session.send_frame(search_resp_frame(rid, [], error=UNAVAILABLE))
            return
        await session.send_frame(search_resp_frame(rid, resp.hits))

    async def on_sub(self, session: Session, msg: Message) -> None:
        req = parse_search_sub(msg)
        sid = req.subscription_id
        if self.live is None:
            await session.send_frame(search_resp_frame(sid, [], error=UNAVAILABLE))
            return
        mine: set[str] | None = session.state.get("search")
        if mine is None:
            mine = session.state["search"] = set()
            session.on_close(lambda: self._drop_session(session))
        internal = f"{session.conn_id}:{sid}"
        mine.add(sid)
        self._subs[internal] = (session, sid)

        def first(hits: list[SearchHit]) -> None:
            session.send_nowait(search_resp_frame(sid, hits))

        try:
            await self.live.subscribe(
                internal, req.map_name, req.query, _options(req.options), on_first=first
            )
        except SearchError as e:
            mine.discard(sid)
            self._subs.pop(internal, None)
            if not isinstance(e, QueryRejected):
                log.warning("SEARCH_SUB on %r failed: %s", req.map_name, e)
            error = str(e) if isinstance(e, QueryRejected) else UNAVAILABLE
            await session.send_frame(search_resp_frame(sid, [], error=error))

    async def on_unsub(self, session: Session, msg: Message) -> None:
        sid = parse_search_unsub(msg).subscription_id
        mine: set[str] | None = session.state.get("search")
        if not mine or sid not in mine or self.live is None:
            return
        mine.discard(sid)
        internal = f"{session.conn_id}:{sid}"
        self._subs.pop(internal, None)
        await self.live.unsubscribe(internal)

    def _on_update(self, u: LiveUpdate) -> None:
        target = self._subs.get(u.subscription_id)
        if target is None:
            return
        session, sid = target
        session.send_live(
            search_update_frame(sid, u.key, u.value, u.score, u.matched_terms, u.change_type)
        )

    def _drop_session(self, session: Session) -> None:
        if self.live is None or self.client is None:
            return
        internals = [f"{session.conn_id}:{sid}" for sid in session.state.get("search", ())]
        for internal in internals:
            self._subs.pop(internal, None)
            self.live.forget(internal)
        if internals:
            self.edge.spawn(self._unsubscribe(internals), name="search-unsubscribe")

    async def _unsubscribe(self, internals: list[str]) -> None:
        assert self.client is not None and self.live is not None
        for internal in internals:
            try:
                await self.client.unsubscribe(self.live.subscriber, internal)
            except SearchError as e:
                log.info("unsubscribing %s: %s", internal, e)
                return


def install(edge: Edge) -> None:
    search = EdgeSearch(edge)
    edge.features["search"] = search
    edge.dispatcher.add("SEARCH", search.on_search)
    edge.dispatcher.add("SEARCH_SUB", search.on_sub)
    edge.dispatcher.add("SEARCH_UNSUB", search.on_unsub)
    search.start()
