"""The per-document matcher agrees with tantivy: for any small corpus and any query tree it accepts
exactly the documents tantivy returns (sloppy phrases: at least those), so live search, which
checks changed documents with the matcher, never misses a match."""

from __future__ import annotations

import itertools

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.search.index import MapIndex
from services.search.mapspec import MapSpec
from services.search.matcher import DocTokens, matched_terms, matches
from services.search.plan import SearchOptions, build_plan
from services.search.query import Bool, Boost, Fuzzy, Node, Occur, Phrase, Prefix, Term, leaves

WORDS = ["apple", "apply", "maple", "banana", "band", "cherry", "chery", "date"]
FIELDS = ["title", "body"]

words = st.sampled_from(WORDS)
field = st.none() | st.sampled_from(FIELDS)
leaf = st.one_of(
    st.builds(Term, words, field),
    st.builds(
        lambda ws, f, slop: Phrase(" ".join(ws), f, slop),
        st.lists(words, min_size=2, max_size=3),
        field,
        st.sampled_from([0, 0, 1, 2]),
    ),
    st.builds(lambda w, n, f: Prefix(w[:n], f), words, st.integers(1, 4), field),
    st.builds(Fuzzy, words, field, st.integers(0, 2)),
)
occur = st.sampled_from(list(Occur))


def trees(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    return st.one_of(
        st.builds(lambda cs: Bool(tuple(cs)), st.lists(st.tuples(occur, children), max_size=3)),
        st.builds(Boost, children, st.sampled_from([0.5, 2.0])),
    )


queries = st.recursive(leaf, trees, max_leaves=5)
documents = st.lists(
    st.fixed_dictionaries(
        {}, optional={f: st.lists(words, max_size=5).map(" ".join) for f in FIELDS}
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=documents, node=queries)
def test_matcher_accepts_exactly_what_tantivy_matches(
    docs: list[dict[str, str]], node: Node
) -> None:
    idx = MapIndex("m", MapSpec())
    texts = {}
    for i, d in enumerate(docs):
        texts[f"k{i}"] = idx.upsert(f"k{i}", msgpack.packb(d))
    idx.commit()
    opts = SearchOptions(limit=100, include_value=False)
    plan = build_plan(node, idx.schema, idx.field_targets, opts)
    # score >= 0 hits: a boost of 0 is not in the strategy, so tantivy's matches are its hits
    from_tantivy = set()
    if plan.query is not None:
        found = idx._searcher.search(plan.query, 100, count=False).hits
        from_tantivy = {idx._searcher.doc(a).get_first("_key") for _, a in found}
    from_matcher = {k for k, t in texts.items() if matches(plan, DocTokens(t))}
    sloppy = any(isinstance(lf, Phrase) and lf.slop for lf, _ in leaves(node))
    assert from_tantivy <= from_matcher
    if not sloppy:
        assert from_tantivy == from_matcher
        # a search's matched terms (asked of the index clause by clause where it can) equal the
        # matcher's reading of the same documents
        for hit in idx.search(plan, opts):
            assert list(hit.matched_terms) == matched_terms(plan, DocTokens(texts[hit.key]))


def test_matched_terms_list_only_positive_terms_present_in_the_document() -> None:
    idx = MapIndex("m", MapSpec())
    t = idx.upsert("k", msgpack.packb({"title": "Apple banana", "body": "cherry"}))
    plan = build_plan(
        Bool(
            (
                (Occur.SHOULD, Term("apple")),
                (Occur.SHOULD, Term("date")),
                (Occur.MUST_NOT, Term("cherry")),
                (Occur.SHOULD, Prefix("ban")),
            )
        ),
        idx.schema,
        idx.field_targets,
        SearchOptions(),
    )
    assert matched_terms(plan, DocTokens(t)) == ["apple", "banana"]


def test_fuzzy_distance_counts_a_transposition_as_one_edit() -> None:
    idx = MapIndex("m", MapSpec())
    t = idx.upsert("k", msgpack.packb({"t": "cherry"}))
    for text, distance, expected in [
        ("chrery", 1, True),
        ("hcerry", 1, True),
        ("chyrre", 1, False),
    ]:
        plan = build_plan(
            Fuzzy(text, None, distance), idx.schema, idx.field_targets, SearchOptions()
        )
        assert matches(plan, DocTokens(t)) is expected, (text, distance)


def test_word_list_has_near_neighbours_for_fuzzy_and_prefix_cases() -> None:
    # guards the property test's vocabulary: it must contain words one edit apart and shared prefixes
    pairs = list(itertools.combinations(WORDS, 2))
    assert any(a[:3] == b[:3] for a, b in pairs)
    assert ("cherry", "chery") in pairs


def test_sloppy_phrase_accepts_every_document_tantivy_accepts() -> None:
    idx = MapIndex("m", MapSpec())
    texts = {
        "gap": idx.upsert("gap", msgpack.packb({"t": "apple date banana"})),
        "swapped": idx.upsert("swapped", msgpack.packb({"t": "banana apple"})),
        "missing": idx.upsert("missing", msgpack.packb({"t": "apple cherry"})),
    }
    idx.commit()
    for slop in (1, 2):
        opts = SearchOptions(limit=10)
        plan = build_plan(Phrase("apple banana", None, slop), idx.schema, idx.field_targets, opts)
        hits = {h.key for h in idx.search(plan, opts)}
        assert hits, slop
        assert hits <= {k for k, t in texts.items() if matches(plan, DocTokens(t))}
        assert not matches(plan, DocTokens(texts["missing"]))


def test_an_excluded_sloppy_phrase_never_rejects_a_document_tantivy_keeps() -> None:
    # "apple apply"~1 does not match "apply apple" in tantivy (a swap needs slop 2), so the
    # query -"apple apply"~1 keeps the document; a generous reading of the phrase must not drop it
    idx = MapIndex("m", MapSpec())
    texts = {"k0": idx.upsert("k0", msgpack.packb({"title": "apply apple"}))}
    idx.commit()
    node = Bool(((Occur.MUST_NOT, Phrase("apple apply", None, 1)),))
    opts = SearchOptions(limit=10, include_value=False)
    plan = build_plan(node, idx.schema, idx.field_targets, opts)
    assert plan.query is not None
    found = idx._searcher.search(plan.query, 10, count=False).hits
    assert {idx._searcher.doc(a).get_first("_key") for _, a in found} == {"k0"}
    assert matches(plan, DocTokens(texts["k0"]))
