"""The planner: what it builds for representative queries, and that the plans answer like
libs.query's evaluate()."""

from __future__ import annotations

import random

import pytest

from libs.dag import JobQuery, Placement, RecordsSource, plan_job, plan_query, query_result
from libs.dag.inprocess import run_local, run_split
from libs.query import QueryError
from libs.query.evaluate import evaluate
from libs.query.model import parse_query

NOW = 1_700_000_000_000

rng = random.Random(7)
RECORDS = [
    (
        f"o{i:03d}",
        {
            "region": rng.choice(["north", "south", "east", None]),
            "amount": rng.choice([rng.randint(0, 500), rng.random() * 100, "n/a"]),
            "qty": rng.randint(1, 9),
            "tags": rng.sample(["a", "b", "c"], rng.randint(0, 2)),
        },
    )
    for i in range(300)
]
for _k, v in RECORDS[::17]:
    v.pop("region", None)


def nodes(records, n=3):
    parts = [records[i::n] for i in range(n)]
    return [lambda p, part=part: RecordsSource(part) for part in parts]


async def answer(query: dict, fields=None, split=True, max_results=10_000):
    q = parse_query(query, fields)
    plan = plan_query("orders", q, now_ms=NOW, max_results=max_results, batch_rows=64)
    if split:
        batches = await run_split(plan.spec, nodes(RECORDS))
    else:
        batches = await run_local(plan.spec, lambda p: RecordsSource(RECORDS))
    return query_result(plan, batches, now_ms=NOW), evaluate(
        q, RECORDS, now_ms=NOW, max_results=max_results
    )


def test_a_filtered_top_n_query_runs_filter_and_top_n_on_every_node() -> None:
    q = parse_query(
        {
            "predicate": {"op": "gt", "attribute": "qty", "value": 3},
            "sort": [{"field": "amount", "direction": "desc"}],
            "limit": 10,
        },
        ["region"],
    )
    plan = plan_query("orders", q, now_ms=NOW)
    kinds = [(v.kind, v.placement) for v in plan.spec.vertices]
    assert kinds == [
        ("source", Placement.STORAGE),
        ("topn", Placement.STORAGE),
        ("topn", Placement.COORDINATOR),
    ]
    assert plan.spec.vertices[0].params["predicate"] == {"op": "gt", "attribute": "qty", "value": 3}
    assert plan.spec.vertices[1].params["n"] == 11
    text = plan.explain()
    assert "fragment (every storage node" in text
    assert "TopN(by amount desc then _key, n=11)" in text
    assert "projection: ['region']" in text


def test_a_group_by_query_ships_partial_aggregates_only() -> None:
    q = parse_query({"groupBy": ["region"], "aggregations": [{"func": "sum", "field": "amount"}]})
    plan = plan_query("orders", q, now_ms=NOW)
    assert [(v.name, v.placement) for v in plan.spec.vertices] == [
        ("source", Placement.STORAGE),
        ("partial", Placement.STORAGE),
        ("final", Placement.COORDINATOR),
        ("topn", Placement.COORDINATOR),
    ]
    assert plan.spec.vertices[0].params["fields"] == ["region", "amount"]
    assert "Aggregate[partial](group_by=['region'], sum(amount))" in plan.explain()


def test_a_job_with_aggregates_and_no_group_by_is_one_global_group() -> None:
    job = JobQuery.from_dict(
        {
            "where": {"region": "north"},
            "aggregations": [{"func": "count"}, {"func": "count_distinct", "field": "qty"}],
        }
    )
    plan = plan_job("orders", job)
    assert plan.shape == "groups" and plan.page_size is None
    assert "Aggregate[final](group_by=[], count(), count_distinct(qty))" in plan.explain()


def test_bad_jobs_are_refused_with_the_reason() -> None:
    with pytest.raises(QueryError, match="unknown aggregate"):
        JobQuery.from_dict({"aggregations": [{"func": "median", "field": "x"}]})
    with pytest.raises(QueryError, match="limit"):
        JobQuery.from_dict({"limit": -1})


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize(
    "query,fields",
    [
        ({}, None),
        ({"where": {"region": "north"}}, ["qty"]),
        (
            {
                "predicate": {"op": "gte", "attribute": "amount", "value": 100},
                "sort": {"amount": "desc"},
                "limit": 7,
            },
            None,
        ),
        (
            {
                "sort": [
                    {"field": "region", "direction": "asc"},
                    {"field": "qty", "direction": "desc"},
                ],
                "limit": 25,
            },
            ["region", "qty"],
        ),
        (
            {
                "predicate": {
                    "op": "or",
                    "children": [
                        {"op": "isNull", "attribute": "region"},
                        {"op": "containsAny", "attribute": "tags", "value": ["a"]},
                    ],
                }
            },
            None,
        ),
        (
            {
                "groupBy": ["region"],
                "aggregations": [
                    {"func": "sum", "field": "qty"},
                    {"func": "min", "field": "amount"},
                    {"func": "max", "field": "amount"},
                    {"func": "count"},
                ],
            },
            None,
        ),
        (
            {
                "groupBy": ["region", "qty"],
                "sort": [{"field": "__count", "direction": "desc"}],
                "limit": 5,
            },
            None,
        ),
    ],
)
async def test_plans_answer_exactly_like_evaluate(query, fields, split) -> None:
    got, expected = await answer(query, fields, split=split)
    assert got == expected


async def test_the_row_clamp_sets_has_more_and_the_cursor_continues_the_page() -> None:
    query = {"sort": [{"field": "qty", "direction": "asc"}], "limit": 40}
    got, expected = await answer(query, max_results=30)
    assert got == expected and got.has_more and got.next_cursor is not None
    nxt, expected_next = await answer({**query, "cursor": got.next_cursor}, max_results=30)
    assert nxt == expected_next and nxt.cursor_status == "valid"
    assert nxt.results[0][0] not in {k for k, _ in got.results}
