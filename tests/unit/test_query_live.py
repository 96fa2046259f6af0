"""LiveQuery: ENTER/UPDATE/LEAVE for unbounded queries and top-N windows (PROTOCOL.md 6.4)."""

from __future__ import annotations

from typing import Any

import pytest

from libs.query import LiveQuery, QueryUpdate, evaluate, parse_query

NOW = 1_700_000_000_000


def events(updates: list[QueryUpdate]) -> list[tuple[str, str, Any]]:
    return [(u.change_type, u.key, u.value) for u in updates]


def live(body: dict[str, Any], rows: list[tuple[str, Any]], **kw: Any) -> LiveQuery:
    return LiveQuery(parse_query(body, kw.pop("fields", None)), rows, now_ms=NOW, **kw)


# --- unbounded ----------------------------------------------------------------------------


def test_unbounded_enter_update_leave() -> None:
    lq = live({"predicate": {"op": "gt", "attribute": "price", "value": 100}}, [])
    assert events(lq.apply_change("p1", {"price": 150})) == [("ENTER", "p1", {"price": 150})]
    assert events(lq.apply_change("p1", {"price": 160})) == [("UPDATE", "p1", {"price": 160})]
    assert events(lq.apply_change("p1", {"price": 50})) == [("LEAVE", "p1", None)]
    assert events(lq.apply_change("p1", {"price": 40})) == []
    assert events(lq.apply_change("p2", {"price": 500})) == [("ENTER", "p2", {"price": 500})]
    assert events(lq.apply_change("p2", None)) == [("LEAVE", "p2", None)]
    assert events(lq.apply_change("p3", None)) == []
    assert lq.results == []


def test_unbounded_results_follow_the_sort() -> None:
    lq = live({"sort": {"n": "desc"}}, [("a", {"n": 1}), ("b", {"n": 3})])
    lq.apply_change("c", {"n": 2})
    assert [k for k, _ in lq.results] == ["b", "c", "a"]
    assert not lq.needs_refill


def test_values_are_projected_and_leave_carries_none() -> None:
    lq = live({}, [("a", {"name": "A", "secret": 1})], fields=["name"])
    assert lq.results == [("a", {"name": "A"})]
    assert events(lq.apply_change("a", {"name": "B", "secret": 2})) == [
        ("UPDATE", "a", {"name": "B"})
    ]
    assert events(lq.apply_change("a", None)) == [("LEAVE", "a", None)]


def test_to_payload_is_the_query_update_message_body() -> None:
    update = QueryUpdate("ENTER", "p-6", {"name": "New"})
    assert update.to_payload("q1") == {
        "queryId": "q1",
        "key": "p-6",
        "value": {"name": "New"},
        "changeType": "ENTER",
    }


# --- bounded windows ----------------------------------------------------------------------

ASC2 = {"sort": [{"field": "n", "direction": "asc"}], "limit": 2}


def test_live_query_limit_clamp_displacing_write_gives_leave_then_enter() -> None:
    # live-query-limit-clamp.test.ts: rows a, b, c; a limit-2 ascending window shows [a, b];
    # another client's write ranks c first: the window becomes [c, a].
    rows = [("a", {"n": 1}), ("b", {"n": 2}), ("c", {"n": 3})]
    lq = live(ASC2, rows)
    assert [k for k, _ in lq.results] == ["a", "b"]
    assert events(lq.apply_change("c", {"n": 0})) == [
        ("LEAVE", "b", None),
        ("ENTER", "c", {"n": 0}),
    ]
    assert [k for k, _ in lq.results] == ["c", "a"]


def test_change_outside_the_window_emits_nothing() -> None:
    rows = [("a", {"n": 1}), ("b", {"n": 2}), ("c", {"n": 3})]
    lq = live(ASC2, rows)
    assert lq.apply_change("c", {"n": 4}) == []
    assert lq.apply_change("d", {"n": 9}) == []
    assert lq.apply_change("d", None) == []
    assert lq.apply_change("e", {"n": 2.5}) == []  # lands in the reserve, not the window
    assert [k for k, _ in lq.results] == ["a", "b"]


def test_change_inside_the_window_is_an_update_even_when_it_reorders() -> None:
    rows = [("a", {"n": 1}), ("b", {"n": 2}), ("c", {"n": 3})]
    lq = live(ASC2, rows)
    assert events(lq.apply_change("a", {"n": 1, "x": 1})) == [("UPDATE", "a", {"n": 1, "x": 1})]
    assert events(lq.apply_change("a", {"n": 2.5})) == [("UPDATE", "a", {"n": 2.5})]
    assert [k for k, _ in lq.results] == ["b", "a"]


def test_removing_an_in_window_row_promotes_the_next_candidate() -> None:
    rows = [("a", {"n": 1}), ("b", {"n": 2}), ("c", {"n": 3}), ("d", {"n": 4})]
    lq = live(ASC2, rows)
    assert events(lq.apply_change("a", None)) == [("LEAVE", "a", None), ("ENTER", "c", {"n": 3})]
    assert events(lq.apply_change("b", {"n": 10})) == [
        ("LEAVE", "b", None),
        ("ENTER", "d", {"n": 4}),
    ]
    assert [k for k, _ in lq.results] == ["c", "d"]


def test_row_that_stops_matching_leaves_and_promotes() -> None:
    body = {**ASC2, "predicate": {"op": "eq", "attribute": "on", "value": True}}
    rows = [("a", {"n": 1, "on": True}), ("b", {"n": 2, "on": True}), ("c", {"n": 3, "on": True})]
    lq = live(body, rows)
    assert events(lq.apply_change("a", {"n": 1, "on": False})) == [
        ("LEAVE", "a", None),
        ("ENTER", "c", {"n": 3, "on": True}),
    ]


def test_window_not_yet_full_takes_new_rows_without_leaves() -> None:
    lq = live(ASC2, [("b", {"n": 2})])
    assert events(lq.apply_change("c", {"n": 3})) == [("ENTER", "c", {"n": 3})]
    assert events(lq.apply_change("a", {"n": 1})) == [
        ("LEAVE", "c", None),
        ("ENTER", "a", {"n": 1}),
    ]
    assert events(lq.apply_change("a", None)) == [("LEAVE", "a", None), ("ENTER", "c", {"n": 3})]
    assert not lq.needs_refill


def test_descending_window_with_key_tie_break() -> None:
    body = {"sort": {"n": "desc"}, "limit": 2}
    lq = live(body, [("a", {"n": 5}), ("b", {"n": 5}), ("c", {"n": 1})])
    assert [k for k, _ in lq.results] == ["a", "b"]
    assert lq.apply_change("aa", {"n": 5}) == [
        QueryUpdate("LEAVE", "b", None),
        QueryUpdate("ENTER", "aa", {"n": 5}),
    ]


def test_reserve_running_dry_sets_needs_refill_and_refill_restores_the_window() -> None:
    rows = [(k, {"n": i}) for i, k in enumerate("abcdefgh")]
    lq = live(ASC2, rows)  # keeps a, b in the window and c, d in reserve; e..h unloaded
    assert not lq.needs_refill
    lq.apply_change("a", None)  # promotes c
    assert not lq.needs_refill
    assert events(lq.apply_change("b", None)) == [("LEAVE", "b", None), ("ENTER", "d", {"n": 3})]
    assert lq.needs_refill  # c, d kept; e..h exist but were never loaded
    assert lq.apply_change("z", {"n": 100}) == []  # beyond the kept prefix: not trusted
    current = [(k, {"n": i}) for i, k in enumerate("abcdefgh") if k not in "ab"]
    current.append(("z", {"n": 100}))
    assert lq.refill(current) == []  # window [c, d] was right
    assert not lq.needs_refill
    assert events(lq.apply_change("c", None)) == [("LEAVE", "c", None), ("ENTER", "e", {"n": 4})]


def test_refill_reports_the_difference_between_windows() -> None:
    lq = live(ASC2, [("a", {"n": 1}), ("b", {"n": 2})])
    updates = lq.refill([("b", {"n": 2, "v": 1}), ("c", {"n": 3})])
    assert events(updates) == [
        ("LEAVE", "a", None),
        ("UPDATE", "b", {"n": 2, "v": 1}),
        ("ENTER", "c", {"n": 3}),
    ]


def test_partial_initial_rows_are_marked_incomplete() -> None:
    lq = live(ASC2, [("a", {"n": 1}), ("b", {"n": 2})], complete=False)
    assert lq.needs_refill  # nothing in reserve and more rows may exist
    full = live(ASC2, [("a", {"n": 1}), ("b", {"n": 2})], complete=True)
    assert not full.needs_refill


def test_limit_zero_never_emits() -> None:
    lq = live({"limit": 0, "sort": {"n": "asc"}}, [("a", {"n": 1})])
    assert lq.apply_change("b", {"n": 0}) == []
    assert lq.results == []


def test_live_window_with_valid_cursor_ignores_rows_before_it() -> None:
    rows = [(k, {"n": i}) for i, k in enumerate("abcdef")]
    first = evaluate(parse_query(ASC2), rows, now_ms=NOW)
    lq = live({**ASC2, "cursor": first.next_cursor}, rows)
    assert lq.cursor_status == "valid"
    assert [k for k, _ in lq.results] == ["c", "d"]
    assert lq.apply_change("a", {"n": 0.5}) == []  # before the cursor
    assert events(lq.apply_change("x", {"n": 2.5})) == [
        ("LEAVE", "d", None),
        ("ENTER", "x", {"n": 2.5}),
    ]


# --- GROUP BY -----------------------------------------------------------------------------

GROUPED = {"groupBy": ["cat"], "aggregations": [{"func": "sum", "field": "price"}]}


def test_group_by_live_updates_enter_and_leave_group_rows() -> None:
    lq = live(GROUPED, [("1", {"cat": "a", "price": 2})])
    assert events(lq.apply_change("2", {"cat": "a", "price": 3})) == [
        ("UPDATE", "S1:a", {"__key": "S1:a", "__count": 2, "cat": "a", "__sum_price": 5})
    ]
    assert events(lq.apply_change("3", {"cat": "b", "price": 1})) == [
        ("ENTER", "S1:b", {"__key": "S1:b", "__count": 1, "cat": "b", "__sum_price": 1})
    ]
    # moving a row between groups updates the old group, then the new one
    assert events(lq.apply_change("2", {"cat": "b", "price": 3})) == [
        ("UPDATE", "S1:a", {"__key": "S1:a", "__count": 1, "cat": "a", "__sum_price": 2}),
        ("UPDATE", "S1:b", {"__key": "S1:b", "__count": 2, "cat": "b", "__sum_price": 4}),
    ]
    assert events(lq.apply_change("1", None)) == [("LEAVE", "S1:a", None)]
    assert (
        lq.results
        == evaluate(
            parse_query(GROUPED), [("2", {"cat": "b", "price": 3}), ("3", {"cat": "b", "price": 1})]
        ).results
    )


def test_group_by_live_query_requires_complete_rows() -> None:
    with pytest.raises(ValueError, match="GROUP BY"):
        live(GROUPED, [], complete=False)
