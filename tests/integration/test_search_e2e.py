"""Full-text and live search end to end over WebSocket: the launcher (`python -m services.up`,
JWT mode, in-memory storage) starts storage nodes, the search service and the edge; a raw MsgPack
client speaks SEARCH / SEARCH_SUB / SEARCH_UPDATE / SEARCH_UNSUB (PROTOCOL.md 8) the way TopGun's
search.test.ts does."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import msgpack
import pytest

from tests.support.processes import ServiceProcess, start_service
from tests.support.wsclient import (
    TEST_SECRET,
    WsClient,
    lww_put,
    lww_remove,
    make_token,
    payload,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning"),
]

_ids = itertools.count(1)

ARTICLES = {
    "art-1": {"title": "Machine learning basics", "body": "An introduction to machine learning"},
    "art-2": {"title": "Deep learning", "body": "Neural networks for machine vision"},
    "art-3": {"title": "Cooking pasta", "body": "Boil water, add salt, cook the pasta"},
    "art-4": {"title": "Learning to cook", "body": "Kitchen basics for beginners"},
}


@pytest.fixture(scope="module")
def system() -> Iterator[ServiceProcess]:
    svc = start_service(
        "services.up",
        ["--port", "0", "--storage-nodes", "2"],
        env={"JWT_SECRET": TEST_SECRET, "STORAGE_BACKEND": "null", "TOPGUN_NO_AUTH": ""},
        ready_timeout=90,
    )
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def url(system: ServiceProcess) -> str:
    return f"ws://127.0.0.1:{system.port}/ws"


async def client(url: str, user: str = "user-0") -> WsClient:
    return await WsClient.connect(url, token=make_token(user))


async def search(c: WsClient, map_name: str, query: str, **options: Any) -> dict[str, Any]:
    rid = f"r-{next(_ids)}"
    body: dict[str, Any] = {"requestId": rid, "mapName": map_name, "query": query}
    if options:
        body["options"] = options
    await c.send({"type": "SEARCH", "payload": body})
    return payload(await c.expect("SEARCH_RESP", requestId=rid))


async def search_until(
    c: WsClient, map_name: str, query: str, count: int, timeout: float = 10.0, **options: Any
) -> dict[str, Any]:
    """Search until ``count`` results come back (writes become searchable within a commit)."""
    deadline = time.monotonic() + timeout
    while True:
        resp = await search(c, map_name, query, **options)
        if len(resp["results"]) == count:
            return resp
        assert time.monotonic() < deadline, f"{query!r}: {resp} after {timeout}s"
        await asyncio.sleep(0.02)


def keys(resp: dict[str, Any]) -> list[str]:
    return [r["key"] for r in resp["results"]]


async def seed(c: WsClient, map_name: str, docs: dict[str, Any]) -> None:
    await c.write_batch([lww_put(map_name, k, v) for k, v in docs.items()])


async def test_search_returns_bm25_ranked_results_with_matched_terms_and_values(url: str) -> None:
    async with await client(url) as c:
        await seed(c, "articles", ARTICLES)
        resp = await search_until(c, "articles", "machine learning", 3)
        assert resp["totalCount"] == 3 and "error" not in resp
        first = resp["results"][0]
        assert first["key"] == "art-1"
        assert first["matchedTerms"] == ["machine", "learning"]
        assert first["value"] == ARTICLES["art-1"]
        scores = [r["score"] for r in resp["results"]]
        assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)

        assert keys(await search(c, "articles", "machine learning", limit=2)) == keys(resp)[:2]
        cut = (scores[0] + scores[1]) / 2
        assert keys(await search(c, "articles", "machine learning", minScore=cut)) == ["art-1"]
        boosted = await search(c, "articles", "basics", boost={"body": 10.0})
        assert keys(boosted)[0] == "art-4" and "error" not in boosted
        assert keys(await search(c, "articles", '"cook the pasta"')) == ["art-3"]
        assert set(keys(await search(c, "articles", "lerning~"))) == {"art-1", "art-2", "art-4"}


async def test_unknown_map_gives_zero_results_and_malformed_query_a_clear_error(url: str) -> None:
    async with await client(url) as c:
        empty = await search(c, "never-written-map", "anything")
        assert empty["results"] == [] and empty["totalCount"] == 0 and "error" not in empty
        bad = await search(c, "articles", 'title:"unclosed phrase')
        assert bad["results"] == [] and bad["totalCount"] == 0
        assert "unterminated phrase" in bad["error"] and "position 6" in bad["error"]


async def test_live_search_enters_updates_and_leaves_as_documents_change(url: str) -> None:
    async with await client(url, "subscriber") as sub, await client(url, "writer") as writer:
        await seed(writer, "gadgets", {"g1": {"name": "wireless mouse"}, "g2": {"name": "cable"}})
        await search_until(sub, "gadgets", "wireless", 1)

        await sub.send(
            {
                "type": "SEARCH_SUB",
                "payload": {"subscriptionId": "s-1", "mapName": "gadgets", "query": "wireless"},
            }
        )
        first = payload(await sub.expect("SEARCH_RESP", requestId="s-1"))
        assert keys(first) == ["g1"]

        async def next_update() -> dict[str, Any]:
            return payload(await sub.expect("SEARCH_UPDATE", subscriptionId="s-1"))

        await writer.write(lww_put("gadgets", "g3", {"name": "wireless keyboard"}))
        u = await next_update()
        assert (u["key"], u["changeType"]) == ("g3", "ENTER")
        assert u["matchedTerms"] == ["wireless"] and u["score"] > 0
        assert u["value"] == {"name": "wireless keyboard"}

        await writer.write(lww_put("gadgets", "g1", {"name": "wireless mouse, silent"}))
        u = await next_update()
        assert (u["key"], u["changeType"]) == ("g1", "UPDATE")

        await writer.write(lww_put("gadgets", "g3", {"name": "wired keyboard"}))
        u = await next_update()
        assert (u["key"], u["changeType"]) == ("g3", "LEAVE")

        await writer.write(lww_remove("gadgets", "g1"))
        u = await next_update()
        assert (u["key"], u["changeType"]) == ("g1", "LEAVE")

        # a non-matching write says nothing; the subscriber's own matching write reaches it too
        await writer.write(lww_put("gadgets", "g4", {"name": "monitor"}))
        await sub.write(lww_put("gadgets", "g5", {"name": "wireless speaker"}))
        u = await next_update()
        assert (u["key"], u["changeType"]) == ("g5", "ENTER")

        await sub.send({"type": "SEARCH_UNSUB", "payload": {"subscriptionId": "s-1"}})
        await sub.ping()  # the unsubscribe is processed before anything that follows
        await writer.write(lww_put("gadgets", "g6", {"name": "wireless charger"}))
        await search_until(writer, "gadgets", "charger", 1)
        await sub.expect_none("SEARCH_UPDATE", within=0.3)


async def test_live_search_respects_min_score_and_reports_a_malformed_query(url: str) -> None:
    async with await client(url) as c:
        await c.send(
            {
                "type": "SEARCH_SUB",
                "payload": {"subscriptionId": "bad", "mapName": "gadgets", "query": "a AND"},
            }
        )
        bad = payload(await c.expect("SEARCH_RESP", requestId="bad"))
        assert bad["results"] == [] and "'AND' needs a clause after it" in bad["error"]

        await c.send(
            {
                "type": "SEARCH_SUB",
                "payload": {
                    "subscriptionId": "strict",
                    "mapName": "notes",
                    "query": "zebra",
                    "options": {"minScore": 1000.0},
                },
            }
        )
        assert payload(await c.expect("SEARCH_RESP", requestId="strict"))["results"] == []
        await c.write(lww_put("notes", "n1", {"text": "zebra"}))
        await search_until(c, "notes", "zebra", 1)
        await c.expect_none("SEARCH_UPDATE", within=0.3)


async def test_an_expired_record_stops_being_a_search_hit(url: str) -> None:
    async with await client(url) as c:
        await c.write_batch(
            [
                lww_put("expiring", "brief", {"t": "ephemeral note"}, ttl_ms=1500),
                lww_put("expiring", "lasting", {"t": "ephemeral note"}),
            ]
        )
        # searchable at once; once millis + ttlMs has passed only the record without a TTL is left
        assert sorted(keys(await search_until(c, "expiring", "ephemeral", 2))) == [
            "brief",
            "lasting",
        ]
        assert keys(await search_until(c, "expiring", "ephemeral", 1, timeout=15)) == ["lasting"]


async def test_http_sync_answers_searches(system: ServiceProcess, url: str) -> None:
    async with await client(url) as c:
        await seed(c, "sync-articles", ARTICLES)
        want = await search_until(c, "sync-articles", "machine learning", 3)
    body = msgpack.packb(
        {
            "clientId": "http-client",
            "clientHlc": {"millis": int(time.time() * 1000), "counter": 0, "nodeId": "http"},
            "searches": [
                {"searchId": "s1", "mapName": "sync-articles", "query": "machine learning"},
                {
                    "searchId": "s2",
                    "mapName": "sync-articles",
                    "query": "cook",
                    "options": {"limit": 1},
                },
                {"searchId": "s3", "mapName": "never-written", "query": "anything"},
                {"searchId": "bad", "mapName": "sync-articles", "query": '"unclosed'},
                {
                    "searchId": "bad-options",
                    "mapName": "sync-articles",
                    "query": "x",
                    "options": {"limit": -1},
                },
            ],
        }
    )
    http = f"http://127.0.0.1:{system.port}"
    async with aiohttp.ClientSession() as s, s.post(f"{http}/sync", data=body) as r:
        assert r.status == 200
        resp = msgpack.unpackb(await r.read(), raw=False)
    results = {x["searchId"]: x for x in resp["searchResults"]}
    assert set(results) == {"s1", "s2", "s3"}
    assert results["s1"]["results"] == want["results"]
    assert results["s1"]["totalCount"] == 3
    assert [x["key"] for x in results["s2"]["results"]] in (["art-3"], ["art-4"])
    assert results["s3"] == {"searchId": "s3", "results": [], "totalCount": 0}
    errors = {e["context"]: e for e in resp["errors"]}
    assert set(errors) == {"bad", "bad-options"}
    assert errors["bad"]["code"] == 400 and "malformed query" in errors["bad"]["message"]
    assert errors["bad-options"]["code"] == 400
