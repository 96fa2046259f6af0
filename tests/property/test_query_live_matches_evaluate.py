"""For any rows and any sequence of changes, a LiveQuery's window — and a client that applies
its ENTER/UPDATE/LEAVE events — equals a fresh one-shot evaluate over the current rows."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.query import GroupAccumulator, LiveQuery, QueryUpdate, evaluate, parse_query

NOW = 1_700_000_000_000
KEYS = [f"k{i}" for i in range(12)]

field_values = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([0.5, -1.5, 2.0, float("nan")]),
    st.sampled_from(["a", "b", "c"]),
    st.none(),
    st.booleans(),
)
records = st.fixed_dictionaries(
    {},
    optional={"n": field_values, "g": st.sampled_from(["x", "y", "z"]), "on": st.booleans()},
)
changes = st.lists(st.tuples(st.sampled_from(KEYS), st.one_of(st.none(), records)), max_size=25)
predicates = st.one_of(
    st.none(),
    st.just({"op": "eq", "attribute": "on", "value": True}),
    st.just({"op": "gte", "attribute": "n", "value": 0}),
    st.just(
        {
            "op": "or",
            "children": [
                {"op": "isNull", "attribute": "n"},
                {"op": "eq", "attribute": "g", "value": "x"},
            ],
        }
    ),
)
sorts = st.lists(
    st.tuples(st.sampled_from(["n", "g", "on"]), st.sampled_from(["asc", "desc"])),
    max_size=2,
    unique_by=lambda t: t[0],
)


def apply_events(view: dict[str, Any], updates: list[QueryUpdate]) -> None:
    for u in updates:
        if u.change_type == "LEAVE":
            assert u.value is None
            assert u.key in view, f"LEAVE for {u.key} which the client does not hold"
            del view[u.key]
        elif u.change_type == "ENTER":
            assert u.key not in view, f"ENTER for {u.key} which the client already holds"
            view[u.key] = u.value
        else:
            assert u.key in view, f"UPDATE for {u.key} which the client does not hold"
            view[u.key] = u.value


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    initial=st.dictionaries(st.sampled_from(KEYS), records, max_size=12),
    changes=changes,
    predicate=predicates,
    sort=sorts,
    limit=st.one_of(st.none(), st.integers(0, 4)),
    reserve=st.one_of(st.none(), st.integers(0, 3)),
    project=st.booleans(),
    use_cursor=st.booleans(),
)
def test_live_query_always_equals_a_fresh_evaluate(
    initial: dict[str, Any],
    changes: list[tuple[str, Any]],
    predicate: dict[str, Any] | None,
    sort: list[tuple[str, str]],
    limit: int | None,
    reserve: int | None,
    project: bool,
    use_cursor: bool,
) -> None:
    body: dict[str, Any] = {"sort": [{"field": f, "direction": d} for f, d in sort]}
    if predicate is not None:
        body["predicate"] = predicate
    if limit is not None:
        body["limit"] = limit
    fields = ["n"] if project else None
    if use_cursor and limit:
        first = evaluate(parse_query(body, fields), initial.items(), now_ms=NOW)
        if first.next_cursor is not None:
            body["cursor"] = first.next_cursor
    query = parse_query(body, fields)

    rows = dict(initial)
    lq = LiveQuery(query, rows.items(), now_ms=NOW, reserve=reserve)
    view = dict(lq.results)
    for key, value in changes:
        if value is None:
            rows.pop(key, None)
        else:
            rows[key] = value
        apply_events(view, lq.apply_change(key, value))
        if lq.needs_refill:
            apply_events(view, lq.refill(rows.items()))
            assert not lq.needs_refill
        expected = evaluate(query, rows.items(), now_ms=NOW).results
        assert lq.results == expected
        assert view == dict(expected)


group_fields = st.lists(st.sampled_from(["g", "on", "n"]), min_size=1, max_size=2, unique=True)


@settings(max_examples=200, deadline=None)
@given(
    initial=st.dictionaries(st.sampled_from(KEYS), records, max_size=12),
    changes=changes,
    group_by=group_fields,
    limit=st.one_of(st.none(), st.integers(1, 3)),
)
def test_grouped_live_query_always_equals_a_fresh_evaluate(
    initial: dict[str, Any],
    changes: list[tuple[str, Any]],
    group_by: list[str],
    limit: int | None,
) -> None:
    body: dict[str, Any] = {
        "groupBy": group_by,
        "aggregations": [
            {"func": "sum", "field": "n"},
            {"func": "min", "field": "n"},
            {"func": "avg", "field": "n"},
        ],
        "sort": [{"field": "__count", "direction": "desc"}],
    }
    if limit is not None:
        body["limit"] = limit
    query = parse_query(body)
    rows = dict(initial)
    lq = LiveQuery(query, rows.items(), now_ms=NOW)
    view = dict(lq.results)
    for key, value in changes:
        if value is None:
            rows.pop(key, None)
        else:
            rows[key] = value
        apply_events(view, lq.apply_change(key, value))
        assert not lq.needs_refill
        expected = evaluate(query, rows.items(), now_ms=NOW).results
        assert _nan_safe(lq.results) == _nan_safe(expected)
        assert _nan_safe(sorted(view.items())) == _nan_safe(sorted(dict(expected).items()))


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(st.tuples(st.sampled_from(KEYS), records), max_size=30),
    parts=st.integers(1, 5),
    group_by=group_fields,
)
def test_partial_aggregates_combined_in_any_split_equal_one_shot(
    rows: list[tuple[str, Any]], parts: int, group_by: list[str]
) -> None:
    query = parse_query(
        {
            "groupBy": group_by,
            "aggregations": [{"func": f, "field": "n"} for f in ("sum", "min", "max", "avg")],
        }
    )
    one_shot = GroupAccumulator(query.group_by, query.aggregations).add_all(rows).result()
    combined = GroupAccumulator(query.group_by, query.aggregations)
    for i in range(parts):
        combined.merge(GroupAccumulator(query.group_by, query.aggregations).add_all(rows[i::parts]))
    assert _nan_safe(combined.result()) == _nan_safe(one_shot)


def _nan_safe(value: Any) -> Any:
    """NaN != NaN; compare NaN sums and averages as a marker instead."""
    if isinstance(value, float) and value != value:
        return "NaN"
    if isinstance(value, dict):
        return {k: _nan_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_safe(v) for v in value]
    return value
