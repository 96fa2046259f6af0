"""Does one document match a query plan, and which of the query's terms does it contain?

This is the per-document check behind live search and behind ``matchedTerms``: it evaluates the
plan's tree against the analyzed terms of a single document, in Python, with the same analyzers
and the same boolean rules as the tantivy query. It never needs the index.

It is exact for terms, phrases without slop, prefixes and fuzzy terms, and deliberately generous
for sloppy phrases (all the words in the field, in any order): live search uses it only to pick
the documents worth scoring, and the final word on a match and its score is the tantivy query
restricted to those documents, so generosity costs a little work and never a wrong answer. Under
an exclusion (MUST_NOT) generosity would turn into strictness, so there a sloppy phrase counts
only where it occurs exactly, in order: the document as a whole is then still never rejected
when tantivy would match it.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain

from services.search.analysis import analyzer
from services.search.plan import QueryPlan
from services.search.query import Bool, Boost, Fuzzy, Leaf, Node, Occur, Phrase, Prefix
from services.search.schema import Target, Texts


class DocTokens:
    """One document's analyzed terms per target, computed lazily and cached."""

    __slots__ = ("_all", "_sets", "_texts", "_values")

    def __init__(self, texts: Texts) -> None:
        self._texts = texts
        self._values: dict[str, list[list[str]]] = {}
        self._sets: dict[str, frozenset[str]] = {}
        self._all: frozenset[str] | None = None

    def all_terms(self, analyzer_of: Callable[[str], str]) -> frozenset[str]:
        """Every term of the document, whatever field it is in."""
        if self._all is None:
            sets = [self._terms(name, analyzer_of(name)) for name in self._texts]
            self._all = sets[0] if len(sets) == 1 else frozenset().union(*sets)
        return self._all

    def values(self, target: Target) -> list[list[str]]:
        """The terms of each string indexed under ``target``, value by value."""
        return self._analyzed(target.name, target.analyzer)

    def terms(self, target: Target) -> frozenset[str]:
        return self._terms(target.name, target.analyzer)

    def _analyzed(self, name: str, analyzer_name: str) -> list[list[str]]:
        got = self._values.get(name)
        if got is None:
            an = analyzer(analyzer_name).analyze
            got = [an(s) for s in self._texts.get(name, ())]
            self._values[name] = got
        return got

    def _terms(self, name: str, analyzer_name: str) -> frozenset[str]:
        got = self._sets.get(name)
        if got is None:
            values = self._analyzed(name, analyzer_name)
            got = frozenset(values[0]) if len(values) == 1 else frozenset(chain(*values))
            self._sets[name] = got
        return got


def matches(plan: QueryPlan, doc: DocTokens) -> bool:
    return _eval(plan.node, plan, doc) is True


def matched_terms(plan: QueryPlan, doc: DocTokens) -> list[str]:
    """The analyzed terms of the query's positive clauses that occur in ``doc``, in query order.

    For a prefix or fuzzy clause these are the document's terms it matched (``mach*`` reports
    ``machine``), so a client can highlight them.
    """
    out: dict[str, None] = {}
    for leaf, resolution in plan.positive:
        for target, toks in resolution or ():
            if not _leaf_in(leaf, target, toks, doc):
                continue
            if isinstance(leaf, Prefix):
                *head, last = toks
                out.update(dict.fromkeys(head))
                out.update(
                    dict.fromkeys(sorted(t for t in doc.terms(target) if t.startswith(last)))
                )
            elif isinstance(leaf, Fuzzy):
                terms = doc.terms(target)
                for tok in toks:
                    near = (u for u in terms if u == tok or _within(tok, u, leaf.distance))
                    out.update(dict.fromkeys(sorted(near)))
            else:
                out.update(dict.fromkeys(toks))
    return list(out)


def _eval(node: Node, plan: QueryPlan, doc: DocTokens, negated: bool = False) -> bool | None:
    """True/False, or None for a clause that was dropped (analyzes to nothing). ``negated``: the
    node sits under an odd number of exclusions, where an approximation must err the other way."""
    if isinstance(node, Bool):
        present = has_must = has_should = False
        must_ok, should_any = True, False
        for occur, child in node.clauses:
            r = _eval(child, plan, doc, negated ^ (occur is Occur.MUST_NOT))
            if r is None:
                continue
            present = True
            if occur is Occur.MUST_NOT:
                if r:
                    return False
            elif occur is Occur.MUST:
                has_must = True
                must_ok = must_ok and r
            else:
                has_should = True
                should_any = should_any or r
        if not present:
            return None
        if has_must:
            return must_ok
        if has_should:
            return should_any
        return True  # only exclusions, and none of them matched
    if isinstance(node, Boost):
        return _eval(node.node, plan, doc, negated)
    res = plan.resolved.get(node, ())
    if res is None:
        return False
    if not res:
        return None
    return any(_leaf_in(node, target, toks, doc, negated) for target, toks in res)


def _leaf_in(
    leaf: Leaf, target: Target, toks: tuple[str, ...], doc: DocTokens, negated: bool = False
) -> bool:
    terms = doc.terms(target)
    if not terms:
        return False
    if isinstance(leaf, Prefix):
        *head, last = toks
        return all(t in terms for t in head) and any(t.startswith(last) for t in terms)
    if isinstance(leaf, Fuzzy):
        d = leaf.distance
        return any(t in terms or any(_within(t, u, d) for u in terms) for t in toks)
    if len(toks) == 1:
        return toks[0] in terms
    if not all(t in terms for t in toks):
        return False
    if isinstance(leaf, Phrase) and leaf.slop > 0 and not negated:
        return True  # generous; excluded, it must be certain: the exact run below
    return any(_has_run(v, toks) for v in doc.values(target))


def _has_run(words: list[str], run: tuple[str, ...]) -> bool:
    n = len(run)
    first = run[0]
    for i in range(len(words) - n + 1):
        if words[i] == first and tuple(words[i : i + n]) == run:
            return True
    return False


def _within(a: str, b: str, limit: int) -> bool:
    """Optimal-string-alignment distance (a transposition costs one) of a and b is <= limit."""
    if abs(len(a) - len(b)) > limit:
        return False
    if limit == 0:
        return a == b
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        best = cur[0]
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            v = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                v = min(v, prev2[j - 2] + 1)
            cur[j] = v
            best = min(best, v)
        if best > limit:
            return False
        prev2, prev = prev, cur
    return prev[len(b)] <= limit
