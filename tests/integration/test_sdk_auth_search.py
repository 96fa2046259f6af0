"""The SDK against the launcher in JWT mode: token auth, a token provider asked again after
AUTH_FAIL, a token-less client parked until it gets a token; and search and live search."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

import topgun
from tests.integration.test_sdk_proxy import FAST, launcher_url
from tests.support.processes import start_service
from tests.support.wsclient import TEST_SECRET, make_token
from tests.unit.test_client_fake_edge import wait_until


@pytest.fixture(scope="module")
def jwt_edge_url() -> Iterator[str]:
    env = {"JWT_SECRET": TEST_SECRET, "STORAGE_BACKEND": "null"}
    svc = start_service("services.up", ["--port", "0"], env=env, ready_timeout=90)
    try:
        yield launcher_url(svc.port)
    finally:
        svc.stop()


async def test_token_client_authenticates_with_its_subject(jwt_edge_url: str) -> None:
    async with topgun.TopGunClient(jwt_edge_url, make_token("alice"), options=FAST) as c:
        await c.wait_ready(15)
        assert c.user_id == "alice"
        op = c.lww_map("auth-map").set("k", 1)
        await c.wait_acked(op, 15)


async def test_token_provider_is_asked_again_after_auth_fail(jwt_edge_url: str) -> None:
    tokens = iter(["not-a-jwt", make_token("bob")])
    statuses: list[topgun.Status] = []

    def provider() -> str:
        return next(tokens)

    async with topgun.TopGunClient(
        jwt_edge_url, token_provider=provider, options=FAST, on_status=statuses.append
    ) as c:
        await c.wait_ready(15)
        assert c.user_id == "bob"
        assert topgun.Status.ERROR in statuses  # the failed attempt was reported


async def test_tokenless_client_waits_for_a_token_on_a_jwt_server(jwt_edge_url: str) -> None:
    async with topgun.TopGunClient(jwt_edge_url, options=FAST) as c:
        m = c.lww_map("parked")
        m.set("k", "written while parked")
        await wait_until(lambda: c.status is topgun.Status.AUTHENTICATING, 15)
        assert c.conn.sessions == 0
        c.set_token(make_token("carol"))
        await c.wait_ready(15)
        await m.flush(15)
        assert c.user_id == "carol"


async def test_search_and_live_search(jwt_edge_url: str) -> None:
    async with topgun.TopGunClient(jwt_edge_url, make_token("dave"), options=FAST) as c:
        docs = c.lww_map("articles-sdk")
        docs.set("a1", {"title": "machine learning basics"})
        docs.set("a2", {"title": "cooking pasta at home"})
        await docs.flush(15)

        async def found() -> list[topgun.SearchHit]:
            deadline = asyncio.get_running_loop().time() + 15
            while True:
                hits = await c.search("articles-sdk", "machine learning", limit=5)
                if hits or asyncio.get_running_loop().time() > deadline:
                    return hits
                await asyncio.sleep(0.1)  # the index commits every few hundred ms

        hits = await found()
        assert [h.key for h in hits] == ["a1"]
        assert set(hits[0].matched_terms) == {"machine", "learning"}

        live = c.search_subscribe("articles-sdk", "pasta")
        await live.ready(15)
        changes = live.changes()
        docs.set("a3", {"title": "fresh pasta recipes"})
        await docs.flush(15)
        while True:
            ch = await changes.get(15)
            if ch.key == "a3":
                assert ch.kind == "ENTER"
                break
        docs.set("a3", {"title": "fresh bread recipes"})
        await docs.flush(15)
        while True:
            ch = await changes.get(15)
            if ch.key == "a3" and ch.kind == "LEAVE":
                break
        assert "a3" not in [h.key for h in live.hits]
        live.close()
