"""compile_filter: every operator of PROTOCOL.md 6.2, null/missing/mixed-type edges, paths."""

from __future__ import annotations

from typing import Any

import pytest

from libs.query import QueryError, compile_filter, project


def leaf(op: str, attribute: str, value: Any = None, **extra: Any) -> dict[str, Any]:
    node: dict[str, Any] = {"op": op, "attribute": attribute, **extra}
    if value is not None:
        node["value"] = value
    return node


def matches(node: dict[str, Any], value: Any, key: str = "k1", **kw: Any) -> bool:
    return compile_filter(node, **kw)(key, value)


# --- eq / neq -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "expected", "result"),
    [
        (25, 25, True),
        (25, 25.0, True),
        (25.5, 25, False),
        ("a", "a", True),
        ("a", "A", False),
        (True, True, True),
        (False, True, False),
        (True, 1, False),
        (1, True, False),
        ("1", 1, False),
        ([1, 2], [1, 2], True),
        ([1, 2], [1.0, 2], True),
        ([1, 2], [2, 1], False),
        ({"a": 1}, {"a": 1}, True),
        ({"a": 1}, {"a": 2}, False),
    ],
)
def test_eq_compares_numbers_across_int_float_and_never_mixes_kinds(
    field: Any, expected: Any, result: bool
) -> None:
    assert matches(leaf("eq", "f", expected), {"f": field}) is result
    assert matches(leaf("neq", "f", expected), {"f": field}) is (not result)


def test_eq_and_neq_are_false_on_missing_or_null_field() -> None:
    for value in ({}, {"f": None}, "not a map", None, 7, [1]):
        assert matches(leaf("eq", "f", 1), value) is False
        assert matches(leaf("neq", "f", 1), value) is False
        assert matches(leaf("eq", "f", "x"), value) is False


def test_leaf_with_null_or_absent_value_matches_nothing() -> None:
    node = {"op": "eq", "attribute": "f", "value": None}
    assert matches(node, {"f": None}) is False
    assert matches({"op": "neq", "attribute": "f"}, {"f": 1}) is False


def test_nan_equals_nothing() -> None:
    assert matches(leaf("eq", "f", float("nan")), {"f": float("nan")}) is False
    assert matches(leaf("gt", "f", 1), {"f": float("nan")}) is False


# --- ordered comparisons ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "field", "expected", "result"),
    [
        ("gt", 85, 80, True),
        ("gt", 85, 85, False),
        ("gte", 85, 85.0, True),
        ("lt", 1.5, 2, True),
        ("lte", 2, 2, True),
        ("lte", 3, 2, False),
        ("gt", "banana", "apple", True),
        ("lt", "banana", "cherry", True),
        ("gte", "b", "b", True),
        ("gt", "text", 5, False),
        ("lt", "text", 5, False),
        ("gt", 5, "4", False),
        ("gt", True, 0, False),
        ("gt", 1, False, False),
        ("gt", [5], 1, False),
        ("lt", {"a": 1}, 9, False),
    ],
)
def test_ordered_ops_compare_numbers_or_strings_and_nothing_else(
    op: str, field: Any, expected: Any, result: bool
) -> None:
    assert matches(leaf(op, "f", expected), {"f": field}) is result


def test_ordered_ops_are_false_on_missing_or_null() -> None:
    for op in ("gt", "gte", "lt", "lte"):
        assert matches(leaf(op, "f", 0), {"f": None}) is False
        assert matches(leaf(op, "f", 0), {}) is False


# --- like / regex / startsWith / endsWith -------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "text", "result"),
    [
        ("Ali%", "Alice", True),
        ("%ice", "Alice", True),
        ("%lic%", "Alice", True),
        ("a_ice", "Alice", True),
        ("a_ce", "Alice", False),
        ("ALICE", "alice", True),
        ("Ali", "Alice", False),
        ("a.c", "abc", False),
        ("a.c", "a.c", True),
        ("(x)%", "(x)yz", True),
        ("%", "", True),
        ("a%", "a\nb", True),
    ],
)
def test_like_is_whole_string_case_insensitive_sql_wildcards(
    pattern: str, text: str, result: bool
) -> None:
    assert matches(leaf("like", "name", pattern), {"name": text}) is result


def test_like_on_non_string_field_or_pattern_is_false() -> None:
    assert matches(leaf("like", "n", "1%"), {"n": 12}) is False
    assert matches(leaf("like", "n", 12), {"n": "12"}) is False


def test_regex_is_an_unanchored_case_sensitive_search() -> None:
    assert matches(leaf("regex", "s", "b.d"), {"s": "abcde"}) is True
    assert matches(leaf("regex", "s", "^b"), {"s": "abc"}) is False
    assert matches(leaf("regex", "s", "B"), {"s": "abc"}) is False
    assert matches(leaf("regex", "s", "(?i)B"), {"s": "abc"}) is True
    assert matches(leaf("regex", "s", "a"), {"s": 1}) is False


def test_bad_regex_is_a_query_error_at_compile_time() -> None:
    with pytest.raises(QueryError, match="invalid regex"):
        compile_filter(leaf("regex", "s", "(unclosed"))


def test_starts_with_and_ends_with_are_case_sensitive_string_tests() -> None:
    assert matches(leaf("startsWith", "s", "ab"), {"s": "abc"}) is True
    assert matches(leaf("startsWith", "s", "AB"), {"s": "abc"}) is False
    assert matches(leaf("endsWith", "s", "bc"), {"s": "abc"}) is True
    assert matches(leaf("endsWith", "s", "b"), {"s": "abc"}) is False
    assert matches(leaf("startsWith", "s", 1), {"s": "1abc"}) is False
    assert matches(leaf("startsWith", "s", "1"), {"s": 12}) is False


# --- in / between / contains --------------------------------------------------------------


def test_in_checks_membership_with_typed_equality() -> None:
    node = leaf("in", "f", ["a", 2, True, [1, 2]])
    assert matches(node, {"f": "a"}) is True
    assert matches(node, {"f": 2.0}) is True
    assert matches(node, {"f": True}) is True
    assert matches(node, {"f": [1, 2]}) is True
    assert matches(node, {"f": 1}) is False  # True is not 1
    assert matches(node, {"f": "2"}) is False
    assert matches(node, {"f": None}) is False
    assert matches(leaf("in", "f", [1]), {"f": True}) is False
    assert matches(leaf("in", "f", []), {"f": 1}) is False


def test_in_with_scalar_value_means_array_field_contains_it() -> None:
    assert matches(leaf("in", "tags", "vip"), {"tags": ["a", "vip"]}) is True
    assert matches(leaf("in", "tags", "vip"), {"tags": ["a"]}) is False
    assert matches(leaf("in", "tags", "vip"), {"tags": "vip"}) is False


def test_between_is_inclusive_and_needs_two_comparable_bounds() -> None:
    node = leaf("between", "p", [10, 20])
    assert [matches(node, {"p": p}) for p in (9, 10, 15.5, 20, 21)] == [
        False,
        True,
        True,
        True,
        False,
    ]
    assert matches(node, {"p": "15"}) is False
    assert matches(leaf("between", "s", ["b", "d"]), {"s": "c"}) is True
    assert matches(leaf("between", "p", [10]), {"p": 10}) is False
    assert matches(leaf("between", "p", [10, "z"]), {"p": 10}) is False
    assert matches(leaf("between", "p", 10), {"p": 10}) is False


def test_contains_all_and_any_over_array_fields() -> None:
    row = {"tags": ["a", "b", 3]}
    assert matches(leaf("containsAll", "tags", ["a", 3.0]), row) is True
    assert matches(leaf("containsAll", "tags", ["a", "z"]), row) is False
    assert matches(leaf("containsAll", "tags", []), row) is True
    assert matches(leaf("containsAll", "tags", "b"), row) is True
    assert matches(leaf("containsAny", "tags", ["z", "b"]), row) is True
    assert matches(leaf("containsAny", "tags", ["z"]), row) is False
    assert matches(leaf("containsAny", "tags", []), row) is False
    assert matches(leaf("containsAny", "tags", "a"), row) is True
    assert matches(leaf("containsAll", "tags", ["a"]), {"tags": "a"}) is False


# --- null checks --------------------------------------------------------------------------


def test_is_null_is_true_for_missing_or_null_and_is_not_null_the_opposite() -> None:
    for value, null in (({}, True), ({"f": None}, True), ({"f": 0}, False), ({"f": ""}, False)):
        assert matches({"op": "isNull", "attribute": "f"}, value) is null
        assert matches({"op": "isNotNull", "attribute": "f"}, value) is (not null)
    assert matches({"op": "isNull", "attribute": "a.b"}, {"a": {"b": None}}) is True
    assert matches({"op": "isNull", "attribute": "a.b"}, {"a": 5}) is True
    assert matches({"op": "isNotNull", "attribute": "a.b"}, {"a": {"b": 1}}) is True


# --- logic --------------------------------------------------------------------------------


def test_and_or_not_including_empty_children() -> None:
    t = leaf("eq", "x", 1)
    f = leaf("eq", "x", 2)
    row = {"x": 1}
    assert matches({"op": "and", "children": [t, t]}, row) is True
    assert matches({"op": "and", "children": [t, f]}, row) is False
    assert matches({"op": "and", "children": [t, t, f]}, row) is False
    assert matches({"op": "and", "children": [t, t, t]}, row) is True
    assert matches({"op": "and", "children": []}, row) is True
    assert matches({"op": "and"}, row) is True
    assert matches({"op": "or", "children": [f, t]}, row) is True
    assert matches({"op": "or", "children": [f, f, f]}, row) is False
    assert matches({"op": "or", "children": [f, f, t]}, row) is True
    assert matches({"op": "or", "children": []}, row) is False
    assert matches({"op": "not", "children": [t]}, row) is False
    assert matches({"op": "not", "children": [f, t]}, row) is True
    assert matches({"op": "not", "children": []}, row) is True


def test_sdk_between_shape_and_of_gte_lte() -> None:
    node = {"op": "and", "children": [leaf("gte", "p", 10), leaf("lte", "p", 20)]}
    assert matches(node, {"p": 10}) and matches(node, {"p": 20})
    assert not matches(node, {"p": 21})


# --- paths, _key, valueRef ----------------------------------------------------------------


def test_dot_paths_reach_into_nested_maps() -> None:
    node = leaf("eq", "address.city", "Oslo")
    assert matches(node, {"address": {"city": "Oslo"}}) is True
    assert matches(node, {"address": {"city": "Rome"}}) is False
    assert matches(node, {"address": "Oslo"}) is False
    assert matches(node, {"address.city": "Oslo"}) is False
    assert matches(leaf("gt", "a.b.c", 1), {"a": {"b": {"c": 2}}}) is True


def test_key_pseudo_field_resolves_to_the_record_key() -> None:
    node = leaf("in", "_key", ["u1", "u3"])
    assert matches(node, {}, key="u1") is True
    assert matches(node, {"_key": "u2"}, key="u2") is False
    assert matches(leaf("startsWith", "_key", "user:"), None, key="user:9") is True
    assert matches(leaf("eq", "_key", "k"), "scalar", key="k") is True


def test_value_ref_data_compares_two_fields_of_the_record() -> None:
    node = {"op": "gt", "attribute": "sold", "valueRef": "data.stock.total", "value": 999}
    assert matches(node, {"sold": 5, "stock": {"total": 3}}) is True
    assert matches(node, {"sold": 2, "stock": {"total": 3}}) is False
    assert matches(node, {"sold": 2000}) is False  # unresolved ref is false, value ignored
    like = {"op": "like", "attribute": "name", "valueRef": "data.pattern"}
    assert matches(like, {"name": "Alice", "pattern": "al%"}) is True
    regex = {"op": "regex", "attribute": "name", "valueRef": "data.pattern"}
    assert matches(regex, {"name": "x", "pattern": "(bad"}) is False


def test_value_ref_auth_resolves_against_the_principal() -> None:
    node = {"op": "eq", "attribute": "owner", "valueRef": "auth.sub"}
    assert matches(node, {"owner": "alice"}, principal={"sub": "alice"}) is True
    assert matches(node, {"owner": "bob"}, principal={"sub": "alice"}) is False
    assert matches(node, {"owner": "alice"}) is False
    assert matches(node, {"owner": "alice"}, principal={}) is False
    assert matches({"op": "isNull", "attribute": "auth"}, {}) is True
    assert matches({"op": "isNotNull", "attribute": "auth.sub"}, {}, principal={"sub": 1}) is True
    other = {"op": "eq", "attribute": "owner", "valueRef": "env.x", "value": "alice"}
    assert matches(other, {"owner": "alice"}) is False


# --- unknown ops, malformed trees, where --------------------------------------------------


@pytest.mark.parametrize("op", ["contains", "match", "matchPhrase", "matchPrefix", "EQ", "foo"])
def test_unknown_ops_never_match_and_never_raise(op: str) -> None:
    f = compile_filter({"op": op, "attribute": "t", "value": "x", "query": "x"})
    assert f("k", {"t": "x"}) is False
    assert compile_filter({"op": "not", "children": [{"op": op}]})("k", {}) is True


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ("eq", "predicate: a predicate node must be a map"),
        ({"attribute": "x"}, "predicate.op: must be a string"),
        ({"op": 3}, "predicate.op"),
        ({"op": "eq", "attribute": 5, "value": 1}, "predicate.attribute"),
        ({"op": "and", "children": {"op": "eq"}}, "predicate.children: must be an array"),
        ({"op": "or", "children": [{"op": "eq"}, 7]}, r"predicate.children\[1\]"),
        ({"op": "eq", "attribute": "x", "valueRef": 1}, "predicate.valueRef"),
    ],
)
def test_malformed_trees_raise_query_error_naming_the_place(node: Any, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        compile_filter(node)


def test_query_error_is_a_value_error() -> None:
    assert issubclass(QueryError, ValueError)


def test_absurdly_deep_tree_is_rejected_not_a_recursion_error() -> None:
    node: dict[str, Any] = leaf("eq", "x", 1)
    for _ in range(500):
        node = {"op": "not", "children": [node]}
    with pytest.raises(QueryError, match="nested deeper"):
        compile_filter(node)


def test_where_map_is_a_conjunction_of_top_level_equalities() -> None:
    f = compile_filter(where={"status": "active", "n": 2})
    assert f("k", {"status": "active", "n": 2.0}) is True
    assert f("k", {"status": "active", "n": 3}) is False
    assert f("k", {"status": "active"}) is False
    one = compile_filter(where={"status": "active"})
    assert one("k", {"status": "active"}) is True
    assert one("k", {"status": "x"}) is False
    assert one("k", "active") is False
    assert compile_filter(where={"f": None})("k", {"f": None}) is True
    assert compile_filter(where={"f": None})("k", {}) is False
    assert compile_filter(where={})("k", {}) is True


def test_predicate_wins_over_where_and_no_filter_matches_all() -> None:
    f = compile_filter(leaf("eq", "x", 1), where={"x": 2})
    assert f("k", {"x": 1}) is True
    assert f("k", {"x": 2}) is False
    assert compile_filter()("k", None) is True


def test_malformed_where_raises_query_error() -> None:
    with pytest.raises(QueryError, match="where"):
        compile_filter(where=["x"])  # type: ignore[arg-type]


# --- projection ---------------------------------------------------------------------------


def test_project_keeps_only_listed_top_level_fields() -> None:
    value = {"name": "A", "price": 1, "secret": 2}
    assert project(value, ["name", "price", "absent"]) == {"name": "A", "price": 1}
    assert project(value, None) is value
    assert project(value, []) == {}
    assert project("scalar", ["name"]) == "scalar"
    assert project(None, ["name"]) is None
