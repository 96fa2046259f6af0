"""Live search: standing queries that emit ENTER / UPDATE / LEAVE as documents change.

How a change is checked (never by re-running a whole query over the map):

1. **Candidates.** Each subscription has *trigger terms*, analyzed terms at least one of which a
   matching document must contain (for ``a b`` both, for ``+a +b`` the rarer-looking one, for a
   phrase its words). Subscriptions are indexed by trigger term, so a changed document reaches
   only the subscriptions that share a term with it, plus those holding the key already (they may
   owe a LEAVE) and those without usable triggers (prefix, fuzzy, purely negative queries).
2. **Match.** The candidate's query tree is evaluated against just the changed document's terms
   (``matcher.py``): no index involved.
3. **Score.** For each subscription with matching documents, one tantivy search of its query
   restricted to those keys (``MapIndex.score_keys``) gives the same BM25 scores a SEARCH would
   return now, and is the final word on the match; ``minScore`` is applied to that score.

A key the subscription holds that no longer matches (deleted, overwritten with other text, or
below ``minScore``) leaves; a matching key the subscription holds updates; a new match enters.
The subscription holds its initial results (the first SEARCH_RESP) plus everything that entered
since, like TopGun's server: the initial ``limit`` does not cap later ENTERs.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from services.search.analysis import analyze
from services.search.index import Hit, MapIndex
from services.search.matcher import DocTokens, matched_terms, matches
from services.search.plan import QueryPlan, SearchOptions, build_plan
from services.search.query import Bool, Boost, Fuzzy, Node, Occur, Phrase, Prefix, Term
from services.search.schema import MapSchema, Texts


class ChangeType(enum.Enum):
    ENTER = "ENTER"
    UPDATE = "UPDATE"
    LEAVE = "LEAVE"


@dataclass(frozen=True, slots=True)
class ChangedDoc:
    """A document as a commit left it: the texts it is indexed with and, when the change carried
    it, its value (msgpack); ``value`` None means read it from the index if needed."""

    texts: Texts
    value: bytes | None = None


Changes = Mapping[str, ChangedDoc | None]  # key -> its new state, None when removed


@dataclass(frozen=True, slots=True)
class SearchUpdate:
    subscriber: str
    subscription_id: str
    key: str
    change: ChangeType
    score: float = 0.0
    matched_terms: tuple[str, ...] = ()
    value: bytes | None = None


SubKey = tuple[str, str]  # (subscriber, subscription id)


@dataclass(eq=False, slots=True)
class Subscription:
    subscriber: str
    subscription_id: str
    map_name: str
    node: Node
    options: SearchOptions
    triggers: frozenset[str] | None = None  # None: every change must be checked
    current: dict[str, float] = field(default_factory=dict)
    plan: QueryPlan | None = None
    plan_version: int = -1

    @property
    def key(self) -> SubKey:
        return (self.subscriber, self.subscription_id)

    def plan_for(self, index: MapIndex) -> QueryPlan:
        """The plan against the index's current fields (rebuilt when new fields appeared)."""
        if self.plan is None or self.plan_version != index.fields_version:
            self.plan = build_plan(self.node, index.schema, index.field_targets, self.options)
            self.plan_version = index.fields_version
        return self.plan


def trigger_terms(node: Node, schema: MapSchema) -> frozenset[str] | None:
    """Terms one of which every matching document contains; None when no such set is known."""
    analyzers = schema.analyzers()

    def walk(n: Node) -> frozenset[str] | None:
        if isinstance(n, Boost):
            return walk(n.node)
        if isinstance(n, Bool):
            musts = [walk(c) for o, c in n.clauses if o is Occur.MUST]
            known_musts = [m for m in musts if m]
            if known_musts:
                return min(known_musts, key=len)
            shoulds = [walk(c) for o, c in n.clauses if o is Occur.SHOULD]
            if musts or not shoulds or any(s is None for s in shoulds):
                return None
            out: set[str] = set()
            for s in shoulds:
                out.update(s or ())
            return frozenset(out) if out else None
        if isinstance(n, Prefix | Fuzzy):
            return None
        assert isinstance(n, Term | Phrase)
        names = analyzers if n.field is None else {schema.analyzer_for_field(n.field)}
        terms: set[str] = set()
        for a in names:
            terms.update(analyze(a, n.text))
        # a clause that analyzes to nothing is dropped by the query, so it proves nothing
        return frozenset(terms) if terms else None

    return walk(node)


@dataclass(frozen=True, slots=True)
class _Doc:
    tokens: DocTokens
    value: bytes | None


class _MapSubscriptions:
    __slots__ = ("always", "by_term", "holders", "subs")

    def __init__(self) -> None:
        self.subs: dict[SubKey, Subscription] = {}
        self.by_term: dict[str, set[Subscription]] = {}
        self.always: set[Subscription] = set()
        self.holders: dict[str, set[Subscription]] = {}

    def add(self, sub: Subscription) -> None:
        self.subs[sub.key] = sub
        if sub.triggers is None:
            self.always.add(sub)
        else:
            for t in sub.triggers:
                self.by_term.setdefault(t, set()).add(sub)
        for k in sub.current:
            self.holders.setdefault(k, set()).add(sub)

    def remove(self, sub: Subscription) -> None:
        self.subs.pop(sub.key, None)
        self.always.discard(sub)
        for t in sub.triggers or ():
            s = self.by_term.get(t)
            if s is not None:
                s.discard(sub)
                if not s:
                    del self.by_term[t]
        for k in sub.current:
            self._unhold(k, sub)

    def hold(self, key: str, sub: Subscription) -> None:
        self.holders.setdefault(key, set()).add(sub)

    def _unhold(self, key: str, sub: Subscription) -> None:
        s = self.holders.get(key)
        if s is not None:
            s.discard(sub)
            if not s:
                del self.holders[key]

    def unhold(self, key: str, sub: Subscription) -> None:
        self._unhold(key, sub)


class LiveSearches:
    """Every standing search subscription, grouped by map."""

    def __init__(self) -> None:
        self._maps: dict[str, _MapSubscriptions] = {}
        self._by_subscriber: dict[str, dict[str, Subscription]] = {}

    def __len__(self) -> int:
        return sum(len(m.subs) for m in self._maps.values())

    def has_map(self, map_name: str) -> bool:
        m = self._maps.get(map_name)
        return bool(m and m.subs)

    def subscriptions_of(self, map_name: str) -> list[Subscription]:
        m = self._maps.get(map_name)
        return list(m.subs.values()) if m else []

    def add(
        self,
        subscriber: str,
        subscription_id: str,
        map_name: str,
        node: Node,
        options: SearchOptions,
        schema: MapSchema | None,
        initial: Iterable[Hit],
    ) -> Subscription:
        """Register (or replace) a subscription holding its initial results."""
        self.remove(subscriber, subscription_id)
        triggers = trigger_terms(node, schema) if schema is not None else None
        sub = Subscription(subscriber, subscription_id, map_name, node, options, triggers)
        sub.current = {h.key: h.score for h in initial}
        self._maps.setdefault(map_name, _MapSubscriptions()).add(sub)
        self._by_subscriber.setdefault(subscriber, {})[subscription_id] = sub
        return sub

    def remove(self, subscriber: str, subscription_id: str) -> bool:
        subs = self._by_subscriber.get(subscriber)
        sub = subs.pop(subscription_id, None) if subs else None
        if sub is None:
            return False
        if not subs:
            self._by_subscriber.pop(subscriber, None)
        m = self._maps.get(sub.map_name)
        if m is not None:
            m.remove(sub)
            if not m.subs:
                del self._maps[sub.map_name]
        return True

    def remove_subscriber(self, subscriber: str) -> int:
        ids = list(self._by_subscriber.get(subscriber, {}))
        for sid in ids:
            self.remove(subscriber, sid)
        return len(ids)

    def on_commit(self, index: MapIndex, changed: Changes) -> list[SearchUpdate]:
        """Updates for the documents of ``index`` changed by the commit that just happened."""
        m = self._maps.get(index.name)
        if m is None or not changed:
            return []
        analyzer_of = index.schema.analyzer_of
        # per subscription: the changed keys it must look at, in change order
        work: dict[Subscription, list[tuple[str, _Doc | None]]] = {}
        for key, change in changed.items():
            doc = _Doc(DocTokens(change.texts), change.value) if change is not None else None
            reached: set[Subscription] = set(m.holders.get(key, ()))
            if doc is not None:
                reached.update(m.always)
                by_term = m.by_term
                if by_term:
                    terms = doc.tokens.all_terms(analyzer_of)
                    if len(by_term) < len(terms):
                        for term, subs in by_term.items():
                            if term in terms:
                                reached.update(subs)
                    else:
                        for term in terms:
                            found = by_term.get(term)
                            if found:
                                reached.update(found)
            for sub in reached:
                work.setdefault(sub, []).append((key, doc))
        updates: list[SearchUpdate] = []
        for sub, items in work.items():
            updates.extend(self._check(m, sub, index, items))
        return updates

    def _check(
        self,
        m: _MapSubscriptions,
        sub: Subscription,
        index: MapIndex,
        items: Sequence[tuple[str, _Doc | None]],
    ) -> list[SearchUpdate]:
        plan = sub.plan_for(index)
        candidates = [k for k, doc in items if doc is not None and matches(plan, doc.tokens)]
        scores = index.scores_of(plan, candidates) if candidates else {}
        min_score = sub.options.min_score
        out = []
        for key, doc in items:
            score = scores.get(key)
            held = key in sub.current
            if doc is not None and score is not None and score >= min_score:
                sub.current[key] = score
                if not held:
                    m.hold(key, sub)
                value = None
                if sub.options.include_value:
                    value = doc.value if doc.value is not None else index.stored_value(key)
                out.append(
                    SearchUpdate(
                        sub.subscriber,
                        sub.subscription_id,
                        key,
                        ChangeType.UPDATE if held else ChangeType.ENTER,
                        score,
                        tuple(matched_terms(plan, doc.tokens)),
                        value,
                    )
                )
            elif held:
                del sub.current[key]
                m.unhold(key, sub)
                out.append(SearchUpdate(sub.subscriber, sub.subscription_id, key, ChangeType.LEAVE))
        return out

    def resync(self, index: MapIndex) -> list[SearchUpdate]:
        """After a rebuild (changes unknown): re-check held keys, and enter new top results."""
        m = self._maps.get(index.name)
        if m is None:
            return []
        updates: list[SearchUpdate] = []
        for sub in list(m.subs.values()):
            plan = sub.plan_for(index)
            held = list(sub.current)
            still = index.scores_of(plan, held)
            for key in held:
                score = still.get(key)
                if score is None or score < sub.options.min_score:
                    del sub.current[key]
                    m.unhold(key, sub)
                    updates.append(
                        SearchUpdate(sub.subscriber, sub.subscription_id, key, ChangeType.LEAVE)
                    )
            for h in index.search(plan, sub.options):
                if h.key not in sub.current:
                    sub.current[h.key] = h.score
                    m.hold(h.key, sub)
                    updates.append(
                        SearchUpdate(
                            sub.subscriber,
                            sub.subscription_id,
                            h.key,
                            ChangeType.ENTER,
                            h.score,
                            h.matched_terms,
                            h.value,
                        )
                    )
        return updates
