"""POST /sync: the HTTP form of the protocol for clients without a socket (PROTOCOL.md 11.1).

One MsgPack request in, one MsgPack response out: operations go through the same write path as
WebSocket ops (so a record written here is visible to every live query), ``syncMaps`` get the LWW
records changed since the client's timestamp (``deltas``), ``queries`` get one page of values,
``searches`` are answered by the search service (``searchResults``, results shaped as in
SEARCH_RESP; a malformed query or an unavailable search service is an ``errors`` entry whose
``context`` is the ``searchId``).
A body that is not MsgPack, nests too deep or has the wrong shape gets HTTP 400 with a JSON
``{code, message}``; an invalid bearer token gets 401.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from libs.query import QueryError, evaluate, parse_query
from libs.search_client import QueryRejected, SearchError
from libs.storage_client import PUT, REMOVE, StorageError, WriteConcern
from libs.wire import ProtocolError, decode_value, encode, parse_search_options
from services.edge.auth import AuthError
from services.edge.live_queries import unpack_value
from services.edge.writes import LEVEL_NAMES

if TYPE_CHECKING:
    from services.edge.edge import Edge
    from services.edge.writes import Writes

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/msgpack"
UNAVAILABLE = "search is not available on this server"


def _json_error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"code": status, "message": message}),
        content_type="application/json",
    )


def _int(v: Any, default: int = 0) -> int:
    if type(v) is int:
        return v
    if type(v) is float and v.is_integer():
        return int(v)
    return default


def _stamp(ts: Any) -> tuple[int, int, str]:
    if type(ts) is dict:
        return (_int(ts.get("millis")), _int(ts.get("counter")), str(ts.get("nodeId") or ""))
    if type(ts) in (int, float):
        return (_int(ts), 0, "")
    return (0, 0, "")


class HttpSync:
    def __init__(self, edge: Edge) -> None:
        self.edge = edge

    async def handle(self, request: web.Request) -> web.Response:
        cfg = self.edge.config
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if token and self.edge.verifier is not None:
            try:
                self.edge.verifier.verify(token)
            except AuthError:
                return _json_error(401, "invalid bearer token")
        body = await request.read()
        if body:
            try:
                req = decode_value(body, max_bytes=cfg.max_frame_bytes, max_depth=cfg.max_depth)
            except ProtocolError as e:
                return _json_error(400, e.message)
        else:
            req = {}
        if type(req) is not dict:
            return _json_error(400, "the /sync body must be a MsgPack map (HttpSyncRequest)")
        try:
            resp = await self._answer(req)
        except _BadRequest as e:
            return _json_error(400, str(e))
        except StorageError as e:
            log.warning("/sync: %s", e)
            return _json_error(503, "storage unavailable; retry later")
        return web.Response(body=encode(resp), content_type=CONTENT_TYPE)

    async def _answer(self, req: dict[str, Any]) -> dict[str, Any]:
        resp: dict[str, Any] = {}
        errors: list[dict[str, Any]] = []
        ops = req.get("operations")
        if ops is not None:
            if type(ops) is not list:
                raise _BadRequest("operations must be an array of ops")
            if ops:
                ack = await self._apply(ops, errors)
                if ack is not None:
                    resp["ack"] = ack
        sync_maps = req.get("syncMaps")
        if type(sync_maps) is list and sync_maps:
            resp["deltas"] = await self._deltas(sync_maps, errors)
        queries = req.get("queries")
        if type(queries) is list and queries:
            resp["queryResults"] = await self._queries(queries, errors)
        searches = req.get("searches")
        if type(searches) is list and searches:
            resp["searchResults"] = await self._searches(searches, errors)
        resp["serverHlc"] = self.edge.clock.now().to_wire()
        if errors:
            resp["errors"] = errors
        return resp

    async def _apply(self, ops: list[Any], errors: list[dict[str, Any]]) -> dict[str, Any] | None:
        writes: Writes = self.edge.features["writes"]
        intake, fut = await writes.submit(ops, f"{self.edge.edge_id}/http", WriteConcern.APPLIED)
        outcome = await fut
        if outcome.failed is not None:
            errors.append({"code": 503, "message": outcome.failed})
            return None
        level = LEVEL_NAMES.get(outcome.achieved, "APPLIED")
        results: list[dict[str, Any]] = []
        for i, op_id in enumerate(intake.accepted_ids):
            err = outcome.errors.get(i)
            r: dict[str, Any] = {"opId": op_id, "success": err is None, "achievedLevel": level}
            if err is not None:
                r["error"] = err[1]
            results.append(r)
        for op_id, reason in intake.refused:
            results.append(
                {"opId": op_id, "success": False, "achievedLevel": level, "error": reason}
            )
        return {"lastId": intake.last_id, "results": results}

    async def _deltas(self, sync_maps: list[Any], errors: list[dict[str, Any]]) -> list[Any]:
        out = []
        for item in sync_maps:
            if type(item) is not dict or type(item.get("mapName")) is not str:
                errors.append({"code": 400, "message": "syncMaps entries need a mapName"})
                continue
            map_name = item["mapName"]
            since = _stamp(item.get("lastSyncTimestamp"))
            rows = await self._scan(map_name, include_tombstones=True)
            records = []
            for r in rows:
                if r.kind not in (PUT, REMOVE) or (r.millis, r.counter, r.node_id) <= since:
                    continue
                record: dict[str, Any] = {
                    "value": unpack_value(r.value) if r.kind == PUT else None,
                    "timestamp": {"millis": r.millis, "counter": r.counter, "nodeId": r.node_id},
                }
                if r.ttl_ms:
                    record["ttlMs"] = r.ttl_ms
                records.append(
                    {
                        "key": r.key,
                        "record": record,
                        "eventType": "PUT" if r.kind == PUT else "REMOVE",
                    }
                )
            out.append(
                {
                    "mapName": map_name,
                    "records": records,
                    "serverSyncTimestamp": self.edge.clock.now().to_wire(),
                }
            )
        return out

    async def _queries(self, queries: list[Any], errors: list[dict[str, Any]]) -> list[Any]:
        out = []
        for q in queries:
            if type(q) is not dict or type(q.get("mapName")) is not str:
                errors.append(
                    {"code": 400, "message": "queries entries need a queryId and mapName"}
                )
                continue
            query_id = q.get("queryId")
            offset = max(0, _int(q.get("offset")))
            limit = q.get("limit")
            spec: dict[str, Any] = {}
            if type(q.get("filter")) is dict:
                spec["where"] = q["filter"]
            if limit is not None:
                spec["limit"] = _int(limit) + offset
            if type(q.get("cursor")) is str:
                spec["cursor"] = q["cursor"]
            try:
                query = parse_query(spec)
            except QueryError as e:
                errors.append({"code": 400, "message": str(e), "context": query_id})
                continue
            rows = await self._scan(q["mapName"])
            live = [(r.key, unpack_value(r.value)) for r in rows if r.kind == PUT]
            result = evaluate(query, live)
            entry: dict[str, Any] = {
                "queryId": query_id,
                "results": [v for _, v in result.results[offset:]],
                "hasMore": result.has_more,
            }
            if result.next_cursor is not None:
                entry["nextCursor"] = result.next_cursor
            out.append(entry)
        return out

    async def _searches(self, searches: list[Any], errors: list[dict[str, Any]]) -> list[Any]:
        """Every well-formed search, run concurrently; results in request order."""
        search = self.edge.features.get("search")
        jobs = []
        for s in searches:
            sid = s.get("searchId") if type(s) is dict else None
            if type(s) is not dict or type(s.get("mapName")) is not str:
                errors.append({"code": 400, "message": "searches entries need a mapName"})
                continue
            if type(s.get("query")) is not str:
                errors.append({"code": 400, "message": "a search needs a query", "context": sid})
                continue
            try:
                options = parse_search_options(s.get("options"), "options")
            except ProtocolError as e:
                errors.append({"code": 400, "message": e.message, "context": sid})
                continue
            jobs.append((sid, s["mapName"], s["query"], options))

        async def run(sid: Any, map_name: str, query: str, options: Any) -> Any:
            if search is None:
                errors.append({"code": 503, "message": UNAVAILABLE, "context": sid})
                return None
            try:
                results = await search.search_results(map_name, query, options)
            except QueryRejected as e:
                errors.append({"code": 400, "message": str(e), "context": sid})
                return None
            except SearchError as e:
                log.warning("/sync search on %r: %s", map_name, e)
                errors.append({"code": 503, "message": UNAVAILABLE, "context": sid})
                return None
            return {"searchId": sid, "results": results, "totalCount": len(results)}

        answers = await asyncio.gather(*(run(*job) for job in jobs))
        return [a for a in answers if a is not None]

    async def _scan(self, map_name: str, *, include_tombstones: bool = False) -> list[Any]:
        router = self.edge.router
        owned: dict[str, list[int]] = {}
        for p, owner in enumerate(router.table.owners):
            owned.setdefault(owner, []).append(p)
        pages = await asyncio.gather(
            *(
                router.client_of(node).scan_all(
                    map_name, partitions=parts, include_tombstones=include_tombstones
                )
                for node, parts in owned.items()
            )
        )
        return [r for page in pages for r in page]


class _BadRequest(Exception):
    pass
