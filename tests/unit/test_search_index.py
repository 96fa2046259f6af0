"""A map's tantivy index: indexing values, BM25 ranking and every query feature, deletes, OR keys,
configured fields and analyzers, and an index that survives reopening."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import pytest

from services.search.index import Hit, MapIndex
from services.search.mapspec import FieldSpec, MapSpec, SearchableMaps
from services.search.plan import InvalidQuery, SearchOptions, build_plan
from services.search.query import parse_query

ARTICLES = {
    "art-1": {"title": "Machine learning basics", "body": "An introduction to machine learning"},
    "art-2": {"title": "Deep learning", "body": "Neural networks for machine vision"},
    "art-3": {"title": "Cooking pasta", "body": "Boil water, add salt, cook the pasta"},
    "art-4": {"title": "Learning to cook", "tags": ["kitchen", "beginner"]},
    "art-5": {"title": "Wireless networks", "body": "Radio, antennas and wireless protocols"},
}


def pack(v: Any) -> bytes:
    return msgpack.packb(v, use_bin_type=True)


def build(docs: dict[str, Any], spec: MapSpec | None = None, path: Path | None = None) -> MapIndex:
    idx = MapIndex("articles", spec or MapSpec(), path)
    for k, v in docs.items():
        idx.upsert(k, pack(v))
    idx.commit()
    return idx


def search(idx: MapIndex, query: str, **options: Any) -> list[Hit]:
    opts = SearchOptions(**options)
    plan = build_plan(parse_query(query), idx.schema, idx.field_targets, opts)
    return idx.search(plan, opts)


def keys(hits: list[Hit]) -> list[str]:
    return [h.key for h in hits]


@pytest.fixture(scope="module")
def articles() -> MapIndex:
    return build(ARTICLES)


def test_term_query_finds_every_document_containing_the_term(articles: MapIndex) -> None:
    assert set(keys(search(articles, "learning"))) == {"art-1", "art-2", "art-4"}


def test_results_are_sorted_by_descending_positive_bm25_score(articles: MapIndex) -> None:
    hits = search(articles, "machine learning")
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(s > 0 for s in scores)
    # art-1 has both words in title and body; it must outrank documents with fewer occurrences
    assert hits[0].key == "art-1"
    assert set(keys(hits)) == {"art-1", "art-2", "art-4"}


def test_rarer_term_weighs_more_than_common_term() -> None:
    docs = {f"c{i}": {"t": "common filler words here"} for i in range(20)}
    docs["both"] = {"t": "common rare"}
    docs["rare-only"] = {"t": "rare filler words here"}
    docs["common-only"] = {"t": "common filler words here"}
    idx = build(docs)
    hits = search(idx, "common rare")
    assert hits[0].key == "both"
    by_key = {h.key: h.score for h in search(idx, "common rare", limit=100)}
    assert by_key["rare-only"] > by_key["common-only"]


def test_shorter_document_with_the_same_term_ranks_higher() -> None:
    idx = build({"short": {"t": "noodles"}, "long": {"t": "noodles " + "filler " * 30}})
    hits = search(idx, "noodles")
    assert keys(hits) == ["short", "long"]
    assert hits[0].score > hits[1].score * 1.5


def test_matched_terms_are_the_lowercased_query_terms_in_the_document(articles: MapIndex) -> None:
    hits = {h.key: h for h in search(articles, "MACHINE Learning pasta")}
    assert hits["art-1"].matched_terms == ("machine", "learning")
    assert hits["art-3"].matched_terms == ("pasta",)
    assert hits["art-4"].matched_terms == ("learning",)


def test_limit_caps_the_number_of_results_keeping_the_best(articles: MapIndex) -> None:
    everything = search(articles, "learning networks machine")
    two = search(articles, "learning networks machine", limit=2)
    assert len(everything) > 2
    assert keys(two) == keys(everything)[:2]


def test_default_limit_is_ten() -> None:
    idx = build({f"k{i}": {"t": f"word number {i}"} for i in range(25)})
    assert len(search(idx, "word")) == 10


def test_min_score_drops_results_below_it(articles: MapIndex) -> None:
    hits = search(articles, "machine learning")
    cut = (hits[0].score + hits[1].score) / 2
    assert keys(search(articles, "machine learning", min_score=cut)) == [hits[0].key]
    assert search(articles, "machine learning", min_score=hits[0].score * 10) == []


def test_phrase_matches_only_adjacent_words_in_order(articles: MapIndex) -> None:
    assert keys(search(articles, '"machine learning"')) == ["art-1"]
    assert search(articles, '"learning machine"') == []


def test_phrase_slop_allows_words_in_between() -> None:
    idx = build({"a": {"t": "machine based learning"}, "b": {"t": "machine learning"}})
    assert keys(search(idx, '"machine learning"')) == ["b"]
    assert set(keys(search(idx, '"machine learning"~1'))) == {"a", "b"}


def test_phrase_does_not_span_two_fields_or_two_array_items() -> None:
    idx = build({"x": {"a": "hello", "b": "world"}, "y": {"tags": ["hello", "world"]}})
    assert search(idx, '"hello world"') == []


def test_prefix_matches_words_starting_with_it_and_reports_them(articles: MapIndex) -> None:
    hits = {h.key: h for h in search(articles, "netw*")}
    assert set(hits) == {"art-2", "art-5"}
    assert hits["art-2"].matched_terms == ("networks",)


def test_fuzzy_matches_within_edit_distance(articles: MapIndex) -> None:
    assert set(keys(search(articles, "lerning~"))) == {"art-1", "art-2", "art-4"}
    assert search(articles, "lrnng~") == []  # three edits away
    assert set(keys(search(articles, "lerninx~2"))) == {"art-1", "art-2", "art-4"}
    hit = search(articles, "wireles~")[0]
    assert (hit.key, hit.matched_terms) == ("art-5", ("wireless",))


def test_fuzzy_ranks_exact_occurrences_above_near_misses() -> None:
    idx = build({"near": {"t": "colour"}, "exact": {"t": "color"}})
    assert keys(search(idx, "color~")) == ["exact", "near"]


def test_boolean_must_and_must_not(articles: MapIndex) -> None:
    assert set(keys(search(articles, "+learning -cook"))) == {"art-1", "art-2"}
    assert set(keys(search(articles, "learning AND machine"))) == {"art-1", "art-2"}
    assert keys(search(articles, "learning AND NOT machine")) == ["art-4"]
    assert set(keys(search(articles, "(pasta OR wireless) AND NOT radio"))) == {"art-3"}


def test_purely_negative_query_matches_everything_else(articles: MapIndex) -> None:
    assert set(keys(search(articles, "-learning"))) == {"art-3", "art-5"}


def test_field_qualified_query_looks_only_in_that_field(articles: MapIndex) -> None:
    assert set(keys(search(articles, "title:learning"))) == {"art-1", "art-2", "art-4"}
    assert keys(search(articles, "body:learning")) == ["art-1"]
    assert keys(search(articles, "tags:kitchen")) == ["art-4"]
    assert search(articles, "nosuchfield:learning") == []
    assert search(articles, "+learning +nosuchfield:learning") == []


def test_field_boost_reorders_results() -> None:
    idx = build(
        {"in-title": {"title": "rust", "body": "x"}, "in-body": {"title": "x", "body": "rust"}}
    )
    assert keys(search(idx, "rust", boost={"title": 5.0}))[0] == "in-title"
    assert keys(search(idx, "rust", boost={"body": 5.0}))[0] == "in-body"


def test_query_boost_multiplies_the_clause_score(articles: MapIndex) -> None:
    base = {h.key: h.score for h in search(articles, "pasta")}
    boosted = {h.key: h.score for h in search(articles, "pasta^3")}
    assert boosted["art-3"] == pytest.approx(base["art-3"] * 3, rel=1e-5)


def test_options_fields_restrict_unqualified_terms(articles: MapIndex) -> None:
    assert keys(search(articles, "learning", fields=("body",))) == ["art-1"]


def test_query_without_searchable_terms_returns_nothing(articles: MapIndex) -> None:
    assert search(articles, "") == []
    assert search(articles, "!!! ???") == []


def test_upsert_replaces_the_previous_document() -> None:
    idx = build({"k": {"t": "old words"}})
    idx.upsert("k", pack({"t": "new words"}))
    idx.commit()
    assert keys(search(idx, "new")) == ["k"]
    assert search(idx, "old") == []
    assert idx.num_docs == 1


def test_repeated_upserts_in_one_commit_leave_one_document() -> None:
    idx = build({})
    for i in range(5):
        idx.upsert("k", pack({"t": f"version {i}"}))
    idx.commit()
    assert idx.num_docs == 1
    assert keys(search(idx, "4")) == ["k"]


def test_delete_removes_the_document() -> None:
    idx = build({"k": {"t": "doomed"}, "j": {"t": "kept"}})
    idx.delete("k")
    idx.commit()
    assert search(idx, "doomed") == []
    assert idx.num_docs == 1


def test_writes_become_visible_only_at_commit() -> None:
    idx = build({})
    idx.upsert("k", pack({"t": "pending"}))
    assert search(idx, "pending") == []
    idx.commit()
    assert keys(search(idx, "pending")) == ["k"]


def test_results_carry_the_value_when_asked(articles: MapIndex) -> None:
    hit = search(articles, "pasta")[0]
    assert hit.value is not None
    assert msgpack.unpackb(hit.value) == ARTICLES["art-3"]
    assert search(articles, "pasta", include_value=False)[0].value is None


def test_all_string_leaves_are_indexed_recursively() -> None:
    idx = build({"k": {"a": {"b": ["deep", {"c": "deeper"}]}, "n": 5, "flag": True}, "s": "plain"})
    assert keys(search(idx, "deeper")) == ["k"]
    assert keys(search(idx, "a:deep")) == ["k"]
    assert keys(search(idx, "plain")) == ["s"]


def test_or_key_is_one_document_with_all_its_live_values() -> None:
    idx = MapIndex("tags", MapSpec())
    idx.or_add("k", "t1", pack("red apple"))
    idx.or_add("k", "t2", pack("green pear"))
    idx.commit()
    hit = search(idx, "apple pear")[0]
    assert hit.matched_terms == ("apple", "pear")
    assert sorted(msgpack.unpackb(hit.value or b"")) == ["green pear", "red apple"]
    assert idx.or_remove("k", "t1")[0] is True
    idx.commit()
    assert search(idx, "apple") == []
    assert keys(search(idx, "pear")) == ["k"]
    assert idx.or_remove("k", "unknown-tag") == (False, None)
    assert idx.or_remove("k", "t2") == (True, None)
    idx.commit()
    assert idx.num_docs == 0


def test_configured_fields_use_their_own_analyzer_and_default_boost() -> None:
    spec = MapSpec(
        (FieldSpec("title", "en_stem", boost=4.0), FieldSpec("author.name", "raw")), "default"
    )
    idx = build(
        {
            "a": {"title": "Running fast", "author": {"name": "Ann Lee"}, "body": "running"},
            "b": {"title": "walking", "author": [{"name": "Bo"}], "body": "run"},
        },
        spec,
    )
    assert keys(search(idx, "runs")) == ["a"]  # stemmed; body is not indexed
    assert keys(search(idx, 'author.name:"Ann Lee"')) == ["a"]
    assert keys(search(idx, "author.name:Bo")) == ["b"]  # through an array of maps
    assert search(idx, "author.name:ann") == []  # raw: whole value, case kept
    with pytest.raises(InvalidQuery, match="unknown field 'body'"):
        search(idx, "body:run")


def test_index_on_disk_survives_reopening(tmp_path: Path) -> None:
    idx = build(ARTICLES, path=tmp_path / "idx")
    idx.close()
    again = MapIndex("articles", MapSpec(), tmp_path / "idx")
    assert not again.needs_rebuild
    assert again.num_docs == len(ARTICLES)
    assert keys(search(again, '"machine learning"')) == ["art-1"]


def test_every_string_field_index_keeps_its_field_slots_across_reopening(tmp_path: Path) -> None:
    idx = build(ARTICLES, path=tmp_path / "idx")
    idx.close()
    again = MapIndex("articles", MapSpec(), tmp_path / "idx")
    assert keys(search(again, "tags:kitchen")) == ["art-4"]
    again.upsert("art-9", pack({"color": "teal", "tags": "kitchen"}))
    again.commit()
    assert set(keys(search(again, "tags:kitchen"))) == {"art-4", "art-9"}
    assert keys(search(again, "color:teal")) == ["art-9"]


def test_index_without_its_field_list_is_flagged_for_rebuild(tmp_path: Path) -> None:
    idx = build(ARTICLES, path=tmp_path / "idx")
    idx.close()
    (tmp_path / "idx" / "fields.json").unlink()
    assert MapIndex("articles", MapSpec(), tmp_path / "idx").needs_rebuild


def test_unreadable_index_is_reset_and_flagged_for_rebuild(tmp_path: Path) -> None:
    idx = build(ARTICLES, path=tmp_path / "idx")
    idx.close()
    (tmp_path / "idx" / "meta.json").write_text("{ not json")
    again = MapIndex("articles", MapSpec(), tmp_path / "idx")
    assert again.needs_rebuild
    assert again.num_docs == 0


def test_map_configuration_parses_per_map_fields_and_exclusions() -> None:
    maps = SearchableMaps.parse(
        '{"default": false, "maps": {"a": {"fields": {"title": {"analyzer": "en_stem", '
        '"boost": 2}}}, "b": {}, "c": false}}'
    )
    assert maps.spec_for("zzz") is None
    assert maps.spec_for("c") is None
    assert maps.spec_for("b") == MapSpec()
    spec_a = maps.spec_for("a")
    assert spec_a is not None and spec_a.fields == (FieldSpec("title", "en_stem", 2.0),)
    assert maps.explicit_maps == ("a", "b")
    assert SearchableMaps.parse("").spec_for("anything") == MapSpec()
    assert SearchableMaps.parse("").explicit_maps is None  # every map: follow every map
    assert SearchableMaps.parse('{"default": false}').explicit_maps == ()  # nothing to follow


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("[]", "must be a JSON object"),
        ('{"maps": {"a": {"fields": {"t": {"analyzer": "klingon"}}}}}', "unknown analyzer"),
        ('{"maps": {"a": {"fields": {"t": {"boost": -1}}}}}', "boost must be a positive number"),
        ('{"maps": {"a": {"fields": {}}}}', "non-empty"),
        ('{"other": 1}', "unknown keys"),
        ("{bad json", "not valid JSON"),
    ],
)
def test_bad_map_configuration_is_rejected_with_a_reason(doc: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SearchableMaps.parse(doc)


def test_fields_beyond_the_slot_pool_are_still_searchable() -> None:
    doc = {f"field{i}": f"word{i}" for i in range(40)}
    idx = build({"wide": doc, "plain": "just a string"})
    assert keys(search(idx, "word0")) == ["wide"]
    assert keys(search(idx, "word39")) == ["wide"]
    assert keys(search(idx, "field39:word39")) == ["wide"]
    assert keys(search(idx, "string")) == ["plain"]
