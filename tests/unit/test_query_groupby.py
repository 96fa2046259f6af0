"""GROUP BY: HEAD's row shape, only requested aggregates, and partial+combine == one-shot."""

from __future__ import annotations

from typing import Any

from libs.query import Aggregation, GroupAccumulator, evaluate, parse_query

ROWS: list[tuple[str, Any]] = [
    ("1", {"cat": "a", "price": 10, "tag": "x"}),
    ("2", {"cat": "a", "price": 2.5, "tag": "y"}),
    ("3", {"cat": "b", "price": "n/a", "tag": "x"}),
    ("4", {"cat": "b", "price": True, "tag": "x"}),
    ("5", {"cat": "a", "price": -4, "tag": "x"}),
    ("6", {"price": 7}),
]


def grouped(body: dict[str, Any], rows: list[tuple[str, Any]] = ROWS) -> dict[Any, Any]:
    result = evaluate(parse_query(body), rows)
    return {value["__key"]: (key, value) for key, value in result.results}


def test_group_rows_have_key_count_group_fields_and_requested_aggregates_only() -> None:
    groups = grouped(
        {
            "groupBy": ["cat"],
            "aggregations": [{"func": "count"}, {"func": "sum", "field": "price"}],
        }
    )
    key, value = groups["S1:a"]
    assert key == "S1:a"
    assert value == {"__key": "S1:a", "__count": 3, "cat": "a", "__sum_price": 8.5}
    assert groups["S1:b"][1] == {"__key": "S1:b", "__count": 2, "cat": "b", "__sum_price": 0}
    assert groups["Z"][1] == {"__key": "Z", "__count": 1, "cat": None, "__sum_price": 7}


def test_count_sum_min_max_avg_skip_non_numbers() -> None:
    groups = grouped(
        {
            "groupBy": ["cat"],
            "aggregations": [
                {"func": "sum", "field": "price"},
                {"func": "min", "field": "price"},
                {"func": "max", "field": "price"},
                {"func": "avg", "field": "price"},
            ],
        }
    )
    a = groups["S1:a"][1]
    assert (a["__sum_price"], a["__min_price"], a["__max_price"]) == (8.5, -4, 10)
    assert a["__avg_price"] == 8.5 / 3
    b = groups["S1:b"][1]  # "n/a" and true are not numbers
    assert b["__count"] == 2
    assert (b["__sum_price"], b["__min_price"], b["__max_price"], b["__avg_price"]) == (
        0,
        None,
        None,
        None,
    )
    assert set(b) == {
        "__key",
        "__count",
        "cat",
        "__sum_price",
        "__min_price",
        "__max_price",
        "__avg_price",
    }


def test_no_aggregations_gives_only_key_count_and_group_fields() -> None:
    groups = grouped({"groupBy": ["cat"]})
    assert groups["S1:a"][1] == {"__key": "S1:a", "__count": 3, "cat": "a"}


def test_multi_field_group_by_and_numeric_grouping_across_int_float() -> None:
    groups = grouped({"groupBy": ["cat", "tag"]})
    assert set(groups) == {"S1:a|S1:x", "S1:a|S1:y", "S1:b|S1:x", "Z|Z"}
    assert groups["S1:a|S1:x"][1]["__count"] == 2
    nums = grouped({"groupBy": ["n"]}, [("1", {"n": 1}), ("2", {"n": 1.0}), ("3", {"n": True})])
    assert {k: v[1]["__count"] for k, v in nums.items()} == {"N1": 2, "B1": 1}


def test_group_by_applies_the_filter_first_and_is_never_projected() -> None:
    body = {"groupBy": ["cat"], "where": {"tag": "x"}}
    result = evaluate(parse_query(body, fields=["cat"]), ROWS)
    assert [(k, v["__count"]) for k, v in result.results] == [("S1:a", 2), ("S1:b", 2)]
    assert all("__key" in v for _, v in result.results)


def test_group_rows_can_be_sorted_and_limited() -> None:
    body = {"groupBy": ["cat"], "sort": [{"field": "__count", "direction": "desc"}], "limit": 1}
    result = evaluate(parse_query(body), ROWS)
    assert [k for k, _ in result.results] == ["S1:a"]
    assert result.has_more


def test_partial_accumulators_combined_equal_one_shot() -> None:
    aggs = [
        Aggregation("count"),
        Aggregation("sum", "price"),
        Aggregation("min", "price"),
        Aggregation("max", "price"),
        Aggregation("avg", "price"),
    ]
    rows = [(str(i), {"g": i % 3, "price": (i * 7919) % 101 / 7 - 5}) for i in range(60)]
    one_shot = GroupAccumulator(["g"], aggs).add_all(rows).result()
    partials = [GroupAccumulator(["g"], aggs).add_all(rows[i::4]) for i in range(4)]
    combined = GroupAccumulator(["g"], aggs)
    for part in reversed(partials):
        combined.merge(part)
    assert combined.result() == one_shot  # exact: float sums are correctly rounded


def test_float_sums_do_not_depend_on_order() -> None:
    values = [1e16, 1.0, -1e16, 0.1, 0.2, 0.3]
    forward = GroupAccumulator(["g"], [Aggregation("sum", "v")])
    backward = GroupAccumulator(["g"], [Aggregation("sum", "v")])
    for v in values:
        forward.add({"g": 0, "v": v})
    for v in reversed(values):
        backward.add({"g": 0, "v": v})
    assert forward.result() == backward.result()
    assert forward.result()[0][1]["__sum_v"] == 1.6


def test_removing_rows_keeps_count_sum_avg_exact_and_flags_a_removed_extreme() -> None:
    aggs = [Aggregation("sum", "v"), Aggregation("min", "v"), Aggregation("avg", "v")]
    acc = GroupAccumulator(["g"], aggs)
    rows = [("1", {"g": 0, "v": 0.1}), ("2", {"g": 0, "v": 5}), ("3", {"g": 0, "v": 0.2})]
    acc.add_all(rows)
    acc.remove({"g": 0, "v": 0.2}, "3")
    assert not acc.stale("N0")
    assert acc.row("N0") == GroupAccumulator(["g"], aggs).add_all(rows[:2]).row("N0")
    acc.remove({"g": 0, "v": 0.1}, "1")  # the minimum
    assert acc.stale("N0")
    acc.rebuild("N0", rows[1:2])
    assert not acc.stale("N0")
    assert acc.row("N0") == {
        "__key": "N0",
        "__count": 1,
        "g": 0,
        "__sum_v": 5,
        "__min_v": 5,
        "__avg_v": 5.0,
    }
    acc.remove({"g": 0, "v": 5}, "2")
    assert "N0" not in acc and acc.result() == []


def test_infinities_and_nan_in_sums() -> None:
    acc = GroupAccumulator(["g"], [Aggregation("sum", "v"), Aggregation("max", "v")])
    acc.add_all([("1", {"g": 0, "v": float("inf")}), ("2", {"g": 0, "v": 1})])
    assert acc.row("N0") == {
        "__key": "N0",
        "__count": 2,
        "g": 0,
        "__sum_v": float("inf"),
        "__max_v": float("inf"),
    }
    acc.add({"g": 0, "v": float("-inf")}, "3")
    row = acc.row("N0")
    assert row is not None and row["__sum_v"] != row["__sum_v"]  # inf + -inf is NaN
    acc.remove({"g": 0, "v": float("-inf")}, "3")
    assert acc.row("N0")["__sum_v"] == float("inf")  # type: ignore[index]
