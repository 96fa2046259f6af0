"""Batch filters agree with libs.query's row filter on any records and any predicate."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.dag import VALUE_COLUMN, Batch, columns_of, compile_batch_filter
from libs.query import compile_filter

FIELDS = ["a", "b", "c", "n.x"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.sampled_from([0.5, -1.5, 2.0, float("inf")]),
    st.sampled_from(["", "a", "ab", "B", "abc", "Ab%"]),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3))


@st.composite
def records(draw):
    n = draw(st.integers(0, 25))
    out = []
    for i in range(n):
        rec = {}
        for f in ("a", "b", "c"):
            if draw(st.booleans()):
                rec[f] = draw(values)
        if draw(st.booleans()):
            rec["n"] = draw(st.one_of(st.fixed_dictionaries({"x": values}), scalars))
        out.append((f"k{i}", rec))
    return out


leaf_ops = st.sampled_from(
    [
        "eq",
        "neq",
        "gt",
        "gte",
        "lt",
        "lte",
        "like",
        "regex",
        "in",
        "between",
        "startsWith",
        "endsWith",
        "containsAll",
        "containsAny",
        "isNull",
        "isNotNull",
        "match",
    ]
)


@st.composite
def leaf(draw):
    op = draw(leaf_ops)
    node = {"op": op, "attribute": draw(st.sampled_from([*FIELDS, "_key"]))}
    if op == "regex":
        node["value"] = draw(st.sampled_from(["^a", "b$", "[0-9]", "."]))
    elif op == "between":
        node["value"] = draw(st.lists(scalars, min_size=2, max_size=2))
    elif op in ("in", "containsAll", "containsAny"):
        node["value"] = draw(st.one_of(st.lists(scalars, max_size=3), scalars))
    elif op == "like":
        node["value"] = draw(st.sampled_from(["a%", "%b", "_", "A_c", "%"]))
    else:
        node["value"] = draw(scalars)
    if draw(st.integers(0, 9)) == 0:
        node.pop("value")
        node["valueRef"] = "data." + draw(st.sampled_from(FIELDS))
    return node


predicates = st.recursive(
    leaf(),
    lambda kids: st.fixed_dictionaries(
        {"op": st.sampled_from(["and", "or", "not"]), "children": st.lists(kids, max_size=3)}
    ),
    max_leaves=6,
)


def batch_of(recs, flt):
    return columns_of([k for k, _ in recs], [v for _, v in recs], list(flt.fields))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recs=records(), predicate=predicates)
def test_batch_filter_equals_row_filter(recs, predicate) -> None:
    flt = compile_batch_filter(predicate)
    expected = [compile_filter(predicate)(k, v) for k, v in recs]
    assert flt(batch_of(recs, flt)).tolist() == expected


@settings(max_examples=60, deadline=None)
@given(
    recs=records(),
    where=st.dictionaries(st.sampled_from(["a", "b", "c", "n.x"]), scalars, max_size=2),
)
def test_batch_where_equals_row_where(recs, where) -> None:
    flt = compile_batch_filter(where=where)
    expected = [compile_filter(where=where)(k, v) for k, v in recs]
    assert flt(batch_of(recs, flt)).tolist() == expected


def test_numeric_leaves_stay_vectorised_and_data_refs_do_not() -> None:
    assert compile_batch_filter({"op": "gt", "attribute": "a", "value": 3}).vectorised
    assert compile_batch_filter(
        {"op": "and", "children": [{"op": "like", "attribute": "b", "value": "x%"}]}
    ).vectorised
    assert not compile_batch_filter({"op": "gt", "attribute": "a", "valueRef": "data.b"}).vectorised
    dotted = compile_batch_filter(where={"a.b": 1})
    assert dotted.needs_values and dotted.fields == (VALUE_COLUMN,)
    assert len(Batch.empty()) == 0
