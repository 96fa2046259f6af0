"""QUERY_SUB through the edge with query_dag running (the launcher starts it): first answers for
row queries, GROUP BY and OR maps come from DAG jobs and equal evaluate() over the same rows."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from libs.query.evaluate import evaluate
from libs.query.model import parse_query
from tests.support.processes import ServiceProcess, start_service
from tests.support.wsclient import WsClient, hlc, lww_put, now_ms, or_add

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def system() -> Iterator[ServiceProcess]:
    svc = start_service(
        "services.up",
        ["--port", "0"],
        env={"TOPGUN_NO_AUTH": "1", "STORAGE_BACKEND": "null", "JWT_SECRET": ""},
        ready_timeout=90,
    )
    try:
        yield svc
    finally:
        svc.stop()


rng = random.Random(5)
SALES = {
    f"s{i:03d}": {
        "shop": rng.choice(["a", "b", "c"]),
        "total": rng.randint(1, 500),
        "kind": rng.choice(["web", "store"]),
    }
    for i in range(150)
}


@pytest.mark.parametrize(
    "query,fields",
    [
        (
            {
                "groupBy": ["shop"],
                "aggregations": [
                    {"func": "sum", "field": "total"},
                    {"func": "max", "field": "total"},
                ],
            },
            None,
        ),
        ({"where": {"kind": "web"}}, ["total"]),
        (
            {
                "predicate": {"op": "gt", "attribute": "total", "value": 250},
                "sort": [{"field": "total", "direction": "desc"}],
                "limit": 5,
            },
            None,
        ),
    ],
)
async def test_query_sub_first_answers_equal_evaluate(system, query, fields) -> None:
    url = f"ws://127.0.0.1:{system.port}/ws"
    async with await WsClient.connect(url) as c:
        await c.write_batch([lww_put("sales", k, v) for k, v in SALES.items()])
        _, resp = await c.subscribe("sales", query, fields=fields)
    expected = evaluate(parse_query(query, fields), list(SALES.items())).to_payload("x")
    assert resp["results"] == expected["results"]
    assert resp["hasMore"] == expected["hasMore"]


async def test_an_or_map_query_lists_every_live_value_of_a_key(system) -> None:
    url = f"ws://127.0.0.1:{system.port}/ws"
    t = now_ms()
    async with await WsClient.connect(url) as c:
        await c.write_batch(
            [
                or_add("tags", "k1", "red", timestamp=hlc(t, 0)),
                or_add("tags", "k1", "blue", timestamp=hlc(t, 1)),
                or_add("tags", "k2", "green", timestamp=hlc(t, 2)),
            ]
        )
        _, resp = await c.subscribe("tags")
    got = {r["key"]: sorted(r["value"]) for r in resp["results"]}
    assert got == {"k1": ["blue", "red"], "k2": ["green"]}
