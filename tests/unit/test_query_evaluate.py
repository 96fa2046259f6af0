"""parse_query, sorting (both shapes), limit/hasMore, cursors and projection in evaluate."""

from __future__ import annotations

from typing import Any

import pytest

from libs.query import (
    CURSOR_MAX_AGE_MS,
    QueryError,
    SortField,
    SortSpec,
    decode_cursor,
    encode_cursor,
    evaluate,
    parse_query,
    parse_sort,
    sort_key,
)

NOW = 1_700_000_000_000

PRODUCTS: list[tuple[str, Any]] = [
    ("p-1", {"name": "Cheap", "price": 10, "cat": "b"}),
    ("p-2", {"name": "Mid", "price": 50.0, "cat": "a"}),
    ("p-3", {"name": "Also mid", "price": 50, "cat": "b"}),
    ("p-4", {"name": "Expensive", "price": 200, "cat": "a"}),
    ("p-5", {"name": "Premium", "price": 500, "cat": "a"}),
]


def keys(result: Any) -> list[str]:
    return [k for k, _ in result.results]


# --- sort shapes --------------------------------------------------------------------------


def test_both_sort_shapes_parse_to_the_same_spec() -> None:
    array = parse_sort([{"field": "price", "direction": "desc"}, {"field": "name"}])
    mapping = parse_sort({"price": "desc", "name": "asc"})
    assert array == mapping
    assert array.fields == (SortField("price", "desc"), SortField("name", "asc"))
    assert parse_sort(None) == SortSpec()
    assert parse_sort([]) == SortSpec()
    assert parse_sort({"a": "DESC"}).fields[0].descending


@pytest.mark.parametrize(
    "bad",
    ["price", 5, [{"direction": "asc"}], [{"field": "p", "direction": "up"}], {"p": 1}, ["p"]],
)
def test_bad_sort_is_a_query_error(bad: Any) -> None:
    with pytest.raises(QueryError, match="sort"):
        parse_sort(bad)


def test_sort_asc_and_desc_with_key_as_final_tie_break() -> None:
    asc = evaluate(parse_query({"sort": [{"field": "price", "direction": "asc"}]}), PRODUCTS)
    assert keys(asc) == ["p-1", "p-2", "p-3", "p-4", "p-5"]  # 50.0 == 50: key breaks the tie
    desc = evaluate(parse_query({"sort": {"price": "desc"}}), PRODUCTS)
    assert keys(desc) == ["p-5", "p-4", "p-2", "p-3", "p-1"]  # key stays ascending


def test_two_field_sort_orders_by_the_first_then_the_second() -> None:
    q = parse_query({"sort": [{"field": "cat", "direction": "asc"}, {"field": "price"}]})
    assert keys(evaluate(q, PRODUCTS)) == ["p-2", "p-4", "p-5", "p-1", "p-3"]
    q = parse_query({"sort": {"cat": "desc", "price": "desc"}})
    assert keys(evaluate(q, PRODUCTS)) == ["p-3", "p-1", "p-5", "p-4", "p-2"]


def test_mixed_types_and_nulls_have_a_deterministic_total_order() -> None:
    rows = [
        ("k-null", {"v": None}),
        ("k-missing", {}),
        ("k-str", {"v": "abc"}),
        ("k-bool", {"v": True}),
        ("k-num", {"v": 3}),
        ("k-list", {"v": [1]}),
        ("k-nan", {"v": float("nan")}),
        ("k-neg", {"v": -1.5}),
    ]
    asc = evaluate(parse_query({"sort": {"v": "asc"}}), rows)
    assert keys(asc) == [
        "k-neg",
        "k-num",
        "k-nan",
        "k-str",
        "k-bool",
        "k-list",
        "k-missing",
        "k-null",
    ]
    desc = evaluate(parse_query({"sort": {"v": "desc"}}), rows)
    assert keys(desc)[:2] == ["k-missing", "k-null"]  # nulls first descending, key ascending
    assert keys(desc)[2:] == ["k-list", "k-bool", "k-str", "k-nan", "k-num", "k-neg"]


def test_sort_key_supports_dot_paths_and_the_key_field() -> None:
    key_of = sort_key(parse_sort({"a.b": "asc"}))
    assert key_of("x", {"a": {"b": 1}}) < key_of("y", {"a": {"b": 2}})
    by_key = sort_key(parse_sort({"_key": "desc"}))
    assert by_key("b", {}) < by_key("a", {})


def test_no_sort_orders_by_key() -> None:
    rows = [("c", 1), ("a", 2), ("b", 3)]
    assert keys(evaluate(parse_query({}), rows)) == ["a", "b", "c"]


# --- parse_query --------------------------------------------------------------------------


def test_parse_query_normalises_and_ignores_unknown_keys() -> None:
    q = parse_query(
        {
            "where": {"cat": "a"},
            "sort": {"price": "desc"},
            "limit": 2.0,
            "groupBy": "cat",
            "aggregations": [{"func": "sum", "field": "price"}, {"func": "count"}],
            "fields": ["ignored-because-payload-fields-win"],
            "somethingNew": {"x": 1},
        },
        fields=["name"],
    )
    assert q.limit == 2
    assert q.group_by == ("cat",)
    assert [a.output_name for a in q.aggregations] == ["__sum_price", None]
    assert q.fields == ("name",)
    assert q.where == {"cat": "a"}
    assert parse_query({"fields": ["a"]}).fields == ("a",)
    assert parse_query(None).limit is None


def test_parse_query_drops_where_when_predicate_is_present() -> None:
    q = parse_query({"where": {"x": 1}, "predicate": {"op": "eq", "attribute": "x", "value": 2}})
    assert q.where is None
    assert q.filter("k", {"x": 2}) and not q.filter("k", {"x": 1})


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"limit": -1}, "query.limit"),
        ({"limit": "5"}, "query.limit"),
        ({"limit": 1.5}, "query.limit"),
        ({"limit": True}, "query.limit"),
        ({"cursor": 5}, "query.cursor"),
        ({"predicate": "x"}, "query.predicate"),
        ({"where": [1]}, "query.where"),
        ({"groupBy": [1]}, r"query.groupBy\[0\]"),
        ({"aggregations": [{"func": "median", "field": "x"}]}, "func"),
        ({"aggregations": [{"func": "sum"}]}, "needs a field"),
        ({"aggregations": {"func": "sum"}}, "query.aggregations"),
        ({"predicate": {"op": "regex", "attribute": "x", "value": "("}}, "invalid regex"),
    ],
)
def test_parse_query_rejects_wrong_types_with_a_clear_message(
    query: dict[str, Any], message: str
) -> None:
    with pytest.raises(QueryError, match=message):
        parse_query(query)


def test_parse_query_rejects_non_string_projection() -> None:
    with pytest.raises(QueryError, match="fields"):
        parse_query({}, fields=[1])  # type: ignore[list-item]


# --- filter + limit + hasMore + projection --------------------------------------------------


def test_predicate_limit_and_has_more() -> None:
    q = parse_query(
        {
            "predicate": {"op": "gt", "attribute": "price", "value": 40},
            "sort": [{"field": "price", "direction": "asc"}],
            "limit": 2,
        }
    )
    result = evaluate(q, PRODUCTS, now_ms=NOW)
    assert keys(result) == ["p-2", "p-3"]
    assert result.has_more is True
    assert result.next_cursor is not None
    assert result.cursor_status == "none"
    exact = evaluate(parse_query({"limit": 5}), PRODUCTS)
    assert exact.has_more is False and exact.next_cursor is None


def test_next_cursor_only_with_limit_and_sort() -> None:
    unsorted = evaluate(parse_query({"limit": 1}), PRODUCTS, now_ms=NOW)
    assert unsorted.has_more and unsorted.next_cursor is None
    clamped = evaluate(parse_query({"sort": {"price": "asc"}}), PRODUCTS, max_results=2)
    assert clamped.has_more and clamped.next_cursor is None
    assert len(clamped.results) == 2


def test_limit_zero_returns_nothing_but_reports_more() -> None:
    result = evaluate(parse_query({"limit": 0, "sort": {"price": "asc"}}), PRODUCTS)
    assert result.results == [] and result.has_more and result.next_cursor is None


def test_projection_keeps_listed_fields_in_results() -> None:
    q = parse_query({"where": {"cat": "b"}}, fields=["name"])
    result = evaluate(q, PRODUCTS)
    assert result.results == [("p-1", {"name": "Cheap"}), ("p-3", {"name": "Also mid"})]


def test_to_payload_always_has_results_and_no_merkle_root() -> None:
    payload = evaluate(parse_query({"where": {"cat": "zzz"}}), PRODUCTS).to_payload("q1")
    assert payload == {"queryId": "q1", "results": [], "hasMore": False, "cursorStatus": "none"}


# --- cursors ------------------------------------------------------------------------------


def paged_query(cursor: str | None = None, **extra: Any) -> Any:
    body: dict[str, Any] = {
        "sort": [{"field": "price", "direction": "desc"}],
        "limit": 2,
        **extra,
    }
    if cursor is not None:
        body["cursor"] = cursor
    return parse_query(body)


def test_cursor_pages_through_every_row_exactly_once() -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        result = evaluate(paged_query(cursor), PRODUCTS, now_ms=NOW)
        assert result.cursor_status == ("none" if cursor is None else "valid")
        seen += keys(result)
        cursor = result.next_cursor
        if not result.has_more:
            assert cursor is None
            break
    assert seen == ["p-5", "p-4", "p-2", "p-3", "p-1"]


def test_cursor_returns_rows_strictly_after_the_position_even_after_writes() -> None:
    first = evaluate(paged_query(), PRODUCTS, now_ms=NOW)
    rows = [*PRODUCTS, ("p-0", {"price": 1000}), ("p-9", {"price": 200})]
    second = evaluate(paged_query(first.next_cursor), rows, now_ms=NOW + 1)
    # position is (200, "p-4"): p-9 ties on price but sorts after p-4 by key; p-0 is before.
    assert keys(second) == ["p-9", "p-2"]


def test_expired_cursor_is_reported_and_ignored() -> None:
    first = evaluate(paged_query(), PRODUCTS, now_ms=NOW)
    late = evaluate(paged_query(first.next_cursor), PRODUCTS, now_ms=NOW + CURSOR_MAX_AGE_MS + 1)
    assert late.cursor_status == "expired"
    assert keys(late) == ["p-5", "p-4"]
    on_time = evaluate(paged_query(first.next_cursor), PRODUCTS, now_ms=NOW + CURSOR_MAX_AGE_MS)
    assert on_time.cursor_status == "valid"


@pytest.mark.parametrize("garbage", ["", "!!!", "bm90IGpzb24", "WzFd", "eyJsYXN0S2V5IjoxfQ"])
def test_undecodable_cursor_is_invalid(garbage: str) -> None:
    result = evaluate(paged_query(garbage), PRODUCTS, now_ms=NOW)
    assert result.cursor_status == "invalid"
    assert keys(result) == ["p-5", "p-4"]


def test_cursor_from_another_filter_or_sort_is_invalid() -> None:
    cursor = evaluate(paged_query(), PRODUCTS, now_ms=NOW).next_cursor
    other_filter = paged_query(cursor, where={"cat": "a"})
    assert evaluate(other_filter, PRODUCTS, now_ms=NOW).cursor_status == "invalid"
    other_sort = parse_query({"sort": {"price": "asc"}, "limit": 2, "cursor": cursor})
    assert evaluate(other_sort, PRODUCTS, now_ms=NOW).cursor_status == "invalid"


def test_cursor_format_is_base64url_json_like_head() -> None:
    spec = parse_sort({"price": "desc"})
    token = encode_cursor(spec, [200], "p-4", predicate_hash=1, sort_hash=2, timestamp_ms=NOW)
    assert "=" not in token and "+" not in token and "/" not in token
    decoded = decode_cursor(token)
    assert decoded is not None
    assert decoded.sort_values == (200,)
    assert decoded.fields == ("price",)
    assert decoded.directions == ("desc",)
    assert decoded.last_key == "p-4"
    assert (decoded.predicate_hash, decoded.sort_hash, decoded.timestamp) == (1, 2, NOW)
    assert decode_cursor("not a cursor") is None


def test_descending_rank_is_the_exact_reverse_of_ascending() -> None:
    from libs.query.sorting import rank, rank_desc

    values = [None, True, False, -1, 0, 0.5, 3, float("nan"), float("inf"), -float("inf")]
    values += ["", "a", "ab", "b", [1], {"a": 1}, [0, "x"]]
    for a in values:
        for b in values:
            assert (rank(a) < rank(b)) == (rank_desc(b) < rank_desc(a)), (a, b)
            assert (rank(a) == rank(b)) == (rank_desc(a) == rank_desc(b)), (a, b)
