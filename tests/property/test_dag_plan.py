"""Any query, any records, any split over nodes: the DAG answers like libs.query's evaluate().

Float sums (and averages) are float64 sums in the DAG and exactly rounded sums in evaluate(),
so those compare within rounding; everything else compares exactly, row for row and in order.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.dag import RecordsSource, plan_query, query_result
from libs.dag.inprocess import run_split
from libs.query.evaluate import QueryResult, evaluate
from libs.query.model import parse_query

NOW = 1_700_000_000_000

group_values = st.one_of(
    st.none(), st.booleans(), st.integers(0, 3), st.sampled_from(["x", "y", "z"])
)
numbers = st.one_of(
    st.integers(-1000, 1000), st.floats(-1e6, 1e6, allow_nan=False), st.none(), st.text(max_size=1)
)


@st.composite
def datasets(draw):
    n = draw(st.integers(0, 60))
    recs = []
    for i in range(n):
        v: dict[str, Any] = {}
        if draw(st.integers(0, 9)):
            v["g"] = draw(group_values)
        if draw(st.integers(0, 9)):
            v["h"] = draw(st.sampled_from(["p", "q"]))
        if draw(st.integers(0, 9)):
            v["x"] = draw(numbers)
        if draw(st.booleans()):
            v["y"] = draw(st.integers(0, 50))
        recs.append((f"k{draw(st.integers(0, 10_000)):05d}-{i}", v))
    return recs


leaf = st.one_of(
    st.builds(
        lambda op, val: {"op": op, "attribute": "y", "value": val},
        st.sampled_from(["gt", "gte", "lt", "lte", "eq", "neq"]),
        st.integers(0, 50),
    ),
    st.builds(lambda val: {"op": "eq", "attribute": "g", "value": val}, group_values),
    st.builds(
        lambda val: {"op": "in", "attribute": "h", "value": val},
        st.lists(st.sampled_from(["p", "q", "r"])),
    ),
    st.builds(lambda op: {"op": op, "attribute": "x"}, st.sampled_from(["isNull", "isNotNull"])),
)
predicates = st.recursive(
    leaf,
    lambda kids: st.fixed_dictionaries(
        {"op": st.sampled_from(["and", "or", "not"]), "children": st.lists(kids, max_size=3)}
    ),
    max_leaves=4,
)
sort_fields = st.lists(
    st.fixed_dictionaries(
        {
            "field": st.sampled_from(["g", "h", "x", "y", "_key"]),
            "direction": st.sampled_from(["asc", "desc"]),
        }
    ),
    max_size=2,
)
aggregations = st.lists(
    st.builds(
        lambda f, field: {"func": f, "field": field},
        st.sampled_from(["count", "sum", "min", "max", "avg"]),
        st.sampled_from(["x", "y"]),
    ),
    max_size=3,
)


@st.composite
def queries(draw):
    q: dict[str, Any] = {}
    if draw(st.booleans()):
        q["predicate"] = draw(predicates)
    elif draw(st.integers(0, 3)) == 0:
        q["where"] = {"h": draw(st.sampled_from(["p", "q"]))}
    grouped = draw(st.integers(0, 2)) == 0
    if grouped:
        q["groupBy"] = draw(
            st.lists(st.sampled_from(["g", "h"]), min_size=1, max_size=2, unique=True)
        )
        q["aggregations"] = draw(aggregations)
        sort = draw(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "field": st.sampled_from(["__count", "g", "__key"]),
                        "direction": st.sampled_from(["asc", "desc"]),
                    }
                ),
                max_size=1,
            )
        )
    else:
        sort = draw(sort_fields)
    if sort:
        q["sort"] = sort
    if draw(st.booleans()):
        q["limit"] = draw(st.integers(0, 12))
    fields = draw(
        st.one_of(st.none(), st.lists(st.sampled_from(["g", "x", "y"]), max_size=2, unique=True))
    )
    return q, fields


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
            return a == b
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def assert_same_result(got: QueryResult, expected: QueryResult) -> None:
    assert [k for k, _ in got.results] == [k for k, _ in expected.results]
    for (k, gv), (_, ev) in zip(got.results, expected.results, strict=True):
        assert same(gv, ev), (k, gv, ev)
    assert got.has_more == expected.has_more
    assert got.cursor_status == expected.cursor_status
    assert (got.next_cursor is None) == (expected.next_cursor is None)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    recs=datasets(), qf=queries(), nodes=st.integers(1, 3), max_results=st.sampled_from([5, 10_000])
)
def test_split_plan_answers_like_evaluate(recs, qf, nodes, max_results) -> None:
    query, fields = qf
    q = parse_query(query, fields)
    plan = plan_query("m", q, now_ms=NOW, max_results=max_results, batch_rows=16)
    parts = [recs[i::nodes] for i in range(nodes)]
    sources = [lambda p, part=part: RecordsSource(part) for part in parts]
    batches = asyncio.run(run_split(plan.spec, sources))
    got = query_result(plan, batches, now_ms=NOW)
    assert_same_result(got, evaluate(q, recs, now_ms=NOW, max_results=max_results))
