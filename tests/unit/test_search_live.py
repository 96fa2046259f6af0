"""Live search: ENTER / UPDATE / LEAVE computed per changed document after each commit."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from services.search.index import MapIndex
from services.search.live import ChangedDoc, ChangeType, LiveSearches, SearchUpdate, trigger_terms
from services.search.mapspec import MapSpec
from services.search.plan import SearchOptions, build_plan
from services.search.query import parse_query

ENTER, UPDATE, LEAVE = ChangeType.ENTER, ChangeType.UPDATE, ChangeType.LEAVE


class Harness:
    """One map's index plus the live subscriptions on it, driven commit by commit."""

    def __init__(self, docs: dict[str, Any] | None = None) -> None:
        self.idx = MapIndex("docs", MapSpec())
        self.live = LiveSearches()
        self.pending: dict[str, ChangedDoc | None] = {}
        for k, v in (docs or {}).items():
            self.put(k, v)
        self.commit()

    def put(self, key: str, value: Any) -> None:
        raw = msgpack.packb(value)
        self.pending[key] = ChangedDoc(self.idx.upsert(key, raw), raw)

    def delete(self, key: str) -> None:
        self.idx.delete(key)
        self.pending[key] = None

    def commit(self) -> list[tuple[str, str, ChangeType]]:
        self.idx.commit()
        changed, self.pending = self.pending, {}
        self.last = self.live.on_commit(self.idx, changed)
        return [(u.subscription_id, u.key, u.change) for u in self.last]

    def subscribe(self, sid: str, query: str, **options: Any) -> list[str]:
        opts = SearchOptions(**options)
        node = parse_query(query)
        plan = build_plan(node, self.idx.schema, self.idx.field_targets, opts)
        initial = self.idx.search(plan, opts)
        self.live.add("edge-1", sid, "docs", node, opts, self.idx.schema, initial)
        return [h.key for h in initial]


def test_new_matching_document_enters() -> None:
    h = Harness({"a": {"t": "pasta recipe"}})
    assert h.subscribe("s", "noodles") == []
    h.put("b", {"t": "noodles with sauce"})
    assert h.commit() == [("s", "b", ENTER)]


def test_update_carries_score_terms_and_value_equal_to_a_fresh_search() -> None:
    h = Harness({"x": {"t": "filler"}, "y": {"t": "more filler"}})
    h.subscribe("s", "wireless networks")
    h.put("b", {"t": "wireless networks everywhere"})
    h.commit()
    (u,) = h.last
    opts = SearchOptions()
    plan = build_plan(parse_query("wireless networks"), h.idx.schema, h.idx.field_targets, opts)
    fresh = h.idx.search(plan, opts)[0]
    assert (u.key, u.score, u.matched_terms) == (fresh.key, fresh.score, fresh.matched_terms)
    assert u.matched_terms == ("wireless", "networks")
    assert msgpack.unpackb(u.value or b"") == {"t": "wireless networks everywhere"}


def test_held_document_that_still_matches_updates() -> None:
    h = Harness({"a": {"t": "noodles"}})
    assert h.subscribe("s", "noodles") == ["a"]
    h.put("a", {"t": "noodles and more noodles"})
    assert h.commit() == [("s", "a", UPDATE)]


def test_document_overwritten_with_other_text_leaves() -> None:
    h = Harness({"a": {"t": "noodles"}})
    h.subscribe("s", "noodles")
    h.put("a", {"t": "rice"})
    assert h.commit() == [("s", "a", LEAVE)]
    h.put("a", {"t": "rice again"})
    assert h.commit() == []  # no longer held: nothing to say


def test_deleted_document_leaves() -> None:
    h = Harness({"a": {"t": "noodles"}})
    h.subscribe("s", "noodles")
    h.delete("a")
    assert h.commit() == [("s", "a", LEAVE)]


def test_document_falling_below_min_score_leaves() -> None:
    filler = {f"f{i}": {"t": "unrelated words"} for i in range(5)}
    h = Harness({**filler, "a": {"t": "noodles"}})
    opts = SearchOptions()
    plan = build_plan(parse_query("noodles"), h.idx.schema, h.idx.field_targets, opts)
    short_score = h.idx.search(plan, opts)[0].score
    assert h.subscribe("s", "noodles", min_score=short_score * 0.9) == ["a"]
    h.put("a", {"t": "noodles " + "padding " * 40})  # longer document, lower BM25
    assert h.commit() == [("s", "a", LEAVE)]


def test_non_matching_change_of_an_unheld_document_says_nothing() -> None:
    h = Harness()
    h.subscribe("s", "noodles")
    h.put("a", {"t": "rice"})
    assert h.commit() == []


def test_changes_within_one_commit_report_the_final_state_once() -> None:
    h = Harness()
    h.subscribe("s", "noodles")
    h.put("a", {"t": "noodles"})
    h.put("a", {"t": "rice"})
    h.put("b", {"t": "rice"})
    h.put("b", {"t": "noodles"})
    assert h.commit() == [("s", "b", ENTER)]


def test_later_enters_are_not_capped_by_the_initial_limit() -> None:
    h = Harness({f"k{i}": {"t": "noodles"} for i in range(3)})
    assert len(h.subscribe("s", "noodles", limit=1)) == 1
    h.put("new", {"t": "noodles"})
    assert h.commit() == [("s", "new", ENTER)]


def test_each_subscription_gets_only_its_own_matches() -> None:
    h = Harness()
    h.subscribe("cats", "cat")
    h.subscribe("dogs", "dog")
    h.put("a", {"t": "a cat"})
    h.put("b", {"t": "a dog"})
    assert sorted(h.commit()) == [("cats", "a", ENTER), ("dogs", "b", ENTER)]


@pytest.mark.parametrize(
    ("query", "text"),
    [
        ("nood*", "noodles"),
        ("nodles~", "noodles"),
        ('"green tea"', "hot green tea"),
        ("+green -coffee", "green tea"),
        ("-coffee", "green tea"),
        ("title:tea", "tea"),
    ],
)
def test_every_query_kind_enters_on_a_matching_write(query: str, text: str) -> None:
    h = Harness({"other": {"title": "coffee"}})
    h.subscribe("s", query)
    h.put("k", {"title": text})
    assert ("s", "k", ENTER) in h.commit()


def test_unsubscribed_subscription_gets_nothing() -> None:
    h = Harness()
    h.subscribe("s", "noodles")
    assert h.live.remove("edge-1", "s")
    h.put("a", {"t": "noodles"})
    assert h.commit() == []
    assert not h.live.remove("edge-1", "s")


def test_removing_a_subscriber_drops_all_its_subscriptions() -> None:
    h = Harness()
    h.subscribe("s1", "noodles")
    h.subscribe("s2", "rice")
    assert h.live.remove_subscriber("edge-1") == 2
    assert len(h.live) == 0
    assert not h.live.has_map("docs")


def test_resubscribing_with_the_same_id_replaces_the_query() -> None:
    h = Harness()
    h.subscribe("s", "noodles")
    h.subscribe("s", "rice")
    h.put("a", {"t": "noodles"})
    h.put("b", {"t": "rice"})
    assert h.commit() == [("s", "b", ENTER)]


def test_trigger_terms_are_words_every_match_must_contain() -> None:
    schema = MapIndex("t", MapSpec()).schema
    assert trigger_terms(parse_query("Green tea"), schema) == {"green", "tea"}
    assert trigger_terms(parse_query('+green +"hot tea"'), schema) == {"green"}
    assert trigger_terms(parse_query("+gr* +tea"), schema) == {"tea"}
    assert trigger_terms(parse_query("gr* tea"), schema) is None
    assert trigger_terms(parse_query("-coffee"), schema) is None
    assert trigger_terms(parse_query("tea~"), schema) is None


def test_subscription_without_shared_terms_is_not_evaluated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness()
    h.subscribe("s", "noodles")
    calls: list[str] = []
    real = h.live._check
    monkeypatch.setattr(
        h.live,
        "_check",
        lambda m, sub, idx, items: calls.append(sub.subscription_id) or real(m, sub, idx, items),
    )
    h.put("a", {"t": "rice"})
    h.commit()
    assert calls == []
    h.put("b", {"t": "noodles"})
    h.commit()
    assert calls == ["s"]


def test_resync_after_rebuild_leaves_vanished_and_enters_new_matches() -> None:
    h = Harness({"a": {"t": "noodles"}})
    h.subscribe("s", "noodles")
    h.idx.clear()
    h.idx.upsert("b", msgpack.packb({"t": "noodles"}), fresh=True)
    h.idx.commit()
    updates: list[SearchUpdate] = h.live.resync(h.idx)
    assert [(u.key, u.change) for u in updates] == [("a", LEAVE), ("b", ENTER)]
