"""A parsed query resolved against one map: which fields each clause looks in, which analyzed terms
it looks for there, and the tantivy query that scores it.

The resolution (``QueryPlan.resolved``) is computed once and shared by the tantivy query and by
the Python matcher (``matcher.py``), so the two agree on what every clause means. A clause whose
text analyzes to no term at all (``!!!``, or a word longer than the analyzer keeps) is dropped,
the way tantivy's own query parser drops it.

Scoring: terms and phrases score with BM25. Prefix and fuzzy clauses are automaton queries with a
constant score of 1 (tantivy's behaviour); a fuzzy clause also scores an exact occurrence of its
term with BM25, so exact matches rank above near misses. A bare term is looked up in every field
(an OR across fields, each weighted by its boost), like tantivy's multi-field query parser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import tantivy

from services.search.analysis import analyze
from services.search.query import (
    Bool,
    Boost,
    Fuzzy,
    Leaf,
    Node,
    Occur,
    Phrase,
    Prefix,
    Term,
    leaves,
)
from services.search.schema import MapSchema, Target

DEFAULT_LIMIT = 10
MAX_LIMIT = 10_000


class InvalidQuery(ValueError):
    """The query is well-formed but cannot be run on this map (e.g. it names an unknown field)."""


@dataclass(frozen=True, slots=True)
class SearchOptions:
    """PROTOCOL.md 8 ``SearchOptions``: limit (default 10), minScore, per-field boosts, fields."""

    limit: int = DEFAULT_LIMIT
    min_score: float = 0.0
    boost: Mapping[str, float] = field(default_factory=dict)
    fields: tuple[str, ...] = ()
    include_value: bool = True

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise InvalidQuery("limit must not be negative")
        for name, weight in self.boost.items():
            if not weight >= 0:
                raise InvalidQuery(f"boost for field {name!r} must be a non-negative number")

    @property
    def effective_limit(self) -> int:
        return min(self.limit or DEFAULT_LIMIT, MAX_LIMIT)


# per leaf: (target, analyzed terms) for each target it is looked up in; () when the text analyzes
# to nothing (the clause is dropped); None when it names a field no document has (matches nothing)
Resolution = tuple[tuple[Target, tuple[str, ...]], ...] | None


@dataclass(frozen=True, slots=True)
class LeafProbe:
    """A positive term or phrase clause compiled on its own: searched among a result's hits, it
    tells which of them contain the clause, so their matched terms need no re-analysis."""

    query: tantivy.Query
    terms: tuple[str, ...]  # the clause's analyzed terms (all its targets), as matched terms


@dataclass(frozen=True, slots=True)
class QueryPlan:
    node: Node
    resolved: Mapping[Leaf, Resolution]
    query: tantivy.Query | None  # None: nothing can match
    positive_terms: tuple[str, ...]  # analyzed terms of non-negated clauses (all targets), in order
    positive: tuple[tuple[Leaf, Resolution], ...] = ()  # non-negated leaves, in query order
    # None when a positive clause is a prefix or fuzzy term (its matched terms are the documents'
    # words, so they need the documents' text)
    probes: tuple[LeafProbe, ...] | None = None
    # every hit contains the one probe (no clause matches everything, e.g. ``-x`` alone)
    single_probe_covers_hits: bool = False

    @property
    def matches_nothing(self) -> bool:
        return self.query is None


def build_plan(
    node: Node, schema: MapSchema, fields: Mapping[str, str], options: SearchOptions
) -> QueryPlan:
    """Resolve ``node`` against a map whose fields live in targets ``fields`` (field -> target)."""
    only = options.fields or None
    boosts = options.boost or None
    unqualified = schema.targets(fields, only=only, boosts=boosts)
    resolved: dict[Leaf, Resolution] = {}
    terms: dict[str, None] = {}
    positive: dict[Leaf, None] = {}
    for leaf, negated in leaves(node):
        if not negated:
            positive[leaf] = None
        if leaf in resolved:
            continue
        if leaf.field is None:
            targets: Sequence[Target] = unqualified
        else:
            t = schema.target_for(leaf.field, fields, boosts)
            if t is None and schema.spec.fields is not None:
                known = ", ".join(f.path for f in schema.spec.fields)
                raise InvalidQuery(f"unknown field {leaf.field!r}; searchable fields: {known}")
            if t is None:
                # a field no document of the map has (yet): the clause matches nothing
                resolved[leaf] = None
                continue
            targets = [t]
        res = tuple((t, tuple(toks)) for t in targets if (toks := analyze(t.analyzer, leaf.text)))
        resolved[leaf] = res
        if not negated:
            for _, analyzed in res:
                terms.update(dict.fromkeys(analyzed))
    uses_all: list[bool] = []
    compiled: dict[Leaf, tantivy.Query | None] = {}  # each leaf compiled once, for both uses
    query = _compile(node, schema.schema, resolved, uses_all, compiled)
    probes: list[LeafProbe] | None = []
    for lf in positive:
        found = resolved[lf]
        if not found:
            continue  # dropped or impossible: never matched
        if isinstance(lf, Prefix | Fuzzy):
            probes = None
            break
        q = _compile(lf, schema.schema, resolved, uses_all, compiled)
        assert probes is not None and q is not None
        probes.append(LeafProbe(q, tuple(dict.fromkeys(t for _, toks in found for t in toks))))
    return QueryPlan(
        node,
        resolved,
        query,
        tuple(terms),
        tuple((lf, resolved[lf]) for lf in positive),
        None if probes is None else tuple(probes),
        probes is not None and len(probes) == 1 and not uses_all,
    )


def _compile(
    node: Node,
    schema: tantivy.Schema,
    resolved: Mapping[Leaf, Resolution],
    uses_all: list[bool],
    compiled: dict[Leaf, tantivy.Query | None],
) -> tantivy.Query | None:
    if isinstance(node, Bool):
        subs: list[tuple[tantivy.Occur, tantivy.Query]] = []
        positive = False
        for occur, child in node.clauses:
            q = _compile(child, schema, resolved, uses_all, compiled)
            if q is None:
                continue
            if occur is Occur.MUST_NOT:
                subs.append((tantivy.Occur.MustNot, q))
            else:
                positive = True
                subs.append(
                    (tantivy.Occur.Must if occur is Occur.MUST else tantivy.Occur.Should, q)
                )
        if not subs:
            return None
        if not positive:
            uses_all.append(True)
            # const-scored: tantivy drops a bare AllQuery from intersections, and its score with it
            everything = tantivy.Query.const_score_query(tantivy.Query.all_query(), 1.0)
            subs.append((tantivy.Occur.Must, everything))
        if len(subs) == 1 and subs[0][0] is not tantivy.Occur.MustNot:
            return subs[0][1]
        return tantivy.Query.boolean_query(subs)
    if isinstance(node, Boost):
        inner = _compile(node.node, schema, resolved, uses_all, compiled)
        return None if inner is None else tantivy.Query.boost_query(inner, node.factor)
    if node in compiled:
        return compiled[node]
    q = compiled[node] = _compile_leaf(node, schema, resolved[node])
    return q


def _compile_leaf(node: Leaf, schema: tantivy.Schema, res: Resolution) -> tantivy.Query | None:
    if res is None:
        return tantivy.Query.empty_query()
    if not res:
        return None
    per_target = []
    for target, toks in res:
        q = _leaf_query(node, schema, target.name, list(toks))
        if target.boost != 1.0:
            q = tantivy.Query.boost_query(q, target.boost)
        per_target.append(q)
    if len(per_target) == 1:
        return per_target[0]
    return tantivy.Query.boolean_query([(tantivy.Occur.Should, q) for q in per_target])


def _leaf_query(leaf: Leaf, schema: tantivy.Schema, name: str, toks: list[str]) -> tantivy.Query:
    Q = tantivy.Query
    words: list[str | tuple[int, str]] = [*toks]
    if isinstance(leaf, Prefix):
        if len(toks) == 1:
            return Q.fuzzy_term_query(schema, name, toks[0], distance=0, prefix=True)
        return Q.phrase_prefix_query(schema, name, words)
    if isinstance(leaf, Fuzzy):
        per_tok = [
            Q.boolean_query(
                [
                    (tantivy.Occur.Should, Q.fuzzy_term_query(schema, name, t, leaf.distance)),
                    (tantivy.Occur.Should, Q.term_query(schema, name, t)),
                ]
            )
            for t in toks
        ]
        if len(per_tok) == 1:
            return per_tok[0]
        return Q.boolean_query([(tantivy.Occur.Should, q) for q in per_tok])
    slop = leaf.slop if isinstance(leaf, Phrase) else 0
    assert isinstance(leaf, Term | Phrase)
    if len(toks) == 1:
        return Q.term_query(schema, name, toks[0])
    return Q.phrase_query(schema, name, words, slop)
