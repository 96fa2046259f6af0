"""One map's tantivy index: upserts and deletes by key, batched commits, BM25 search.

Writes go to the index writer in feed order (added documents in bursts, see ``hand_over``) and
become visible together at the next ``commit()``: that is what lets a caller batch many changes
into one commit (near-real-time search) while every change is still applied in feed order. An
upsert deletes the key's previous document, when the key may have one (``keyfilter.py``), and adds
the new one in the same commit, so replaying a change that was already indexed (after a crash
between a commit and the position file) leaves exactly one document per key.

Not thread-safe by itself: one owner task applies changes and drives commits (which run in a
worker thread, tantivy releases the GIL); searches may run at any time against the last
committed state.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import tantivy

from services.search.analysis import register_all
from services.search.keyfilter import KeyFilter
from services.search.mapspec import MapSpec
from services.search.matcher import DocTokens, matched_terms
from services.search.plan import QueryPlan, SearchOptions
from services.search.schema import (
    DYNAMIC_SLOTS,
    EXPIRES_FIELD,
    KEY_FIELD,
    NON_MAP_FIELD,
    OR_EXPIRES_FIELD,
    OR_FIELD,
    REST_SLOT,
    VALUE_FIELD,
    FieldTexts,
    MapSchema,
    Texts,
    string_leaves,
)

log = logging.getLogger(__name__)

DEFAULT_HEAP_BYTES = 32_000_000
FIELDS_FILE = "fields.json"
PROBES_PER_SEARCH = 16  # matched-terms probes answered by one search (see _probe_terms)
ADD_BURST = 1000  # documents held back at most before they go to the writer (see hand_over)
_NO_TEXT = frozenset((int, float, bool, bytes, type(None)))  # value types without strings
KEY_LOOKUP_LIMIT = 256  # up to this many keys, restrict a search by term lookups (see _only)  # an every-string-field map's field -> slot assignment


@dataclass(frozen=True, slots=True)
class Hit:
    key: str
    score: float
    matched_terms: tuple[str, ...]
    value: bytes | None  # msgpack of the value (an OR key: the list of its values); None unasked


@dataclass(slots=True)
class OrRecords:
    """An OR key's live records: tag -> msgpack value, and tag -> expiry (millis) for those
    with a TTL. The document expires when every record has."""

    values: dict[str, bytes]
    expires: dict[str, int]

    @property
    def expires_at(self) -> int | None:
        if not self.values or any(t not in self.expires for t in self.values):
            return None
        return max(self.expires[t] for t in self.values)


class IndexCorrupt(RuntimeError):
    """The on-disk index cannot be opened; it has been reset and needs a rebuild."""


def unpack_value(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return None


class MapIndex:
    """The tantivy index of one map (on disk under ``path``, or in RAM when ``path`` is None)."""

    def __init__(
        self,
        name: str,
        spec: MapSpec,
        path: Path | None = None,
        *,
        heap_bytes: int = DEFAULT_HEAP_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.clock = clock  # wall clock, seconds: what record expiry times are compared with
        self.spec = spec
        self.path = path
        self.schema = MapSchema(spec)
        # field -> target (tantivy field); grows for every-string-field maps as fields appear
        self.field_targets: dict[str, str] = self.schema.static_fields
        self.fields_version = 0
        self._fields_dirty = False
        self.needs_rebuild = False
        self.uncommitted = 0  # changes applied since the last commit
        # key -> its live OR records (tag -> value) and their expiry times, as applied so far
        self._or_pending: dict[str, OrRecords] = {}
        self._adds: list[tantivy.Document] = []  # added, not yet handed to the writer
        self._index = self._open(path)
        register_all(self._index)
        self._index.config_reader("manual")
        self._writer = self._index.writer(heap_bytes, 1)
        self._index.reload()
        self._searcher = self._index.searcher()
        # whether a document may carry an expiry time (searches then leave out expired ones)
        self.has_expiring = self._count_expiring(None) > 0
        # the keys that may have a document (None: unknown, every upsert deletes first)
        self._keys = self._committed_keys()
        if spec.fields is None and path is not None:
            self._load_fields()

    def _load_fields(self) -> None:
        assert self.path is not None
        try:
            pairs = json.loads((self.path / FIELDS_FILE).read_text())
            self.field_targets = {str(f): str(t) for f, t in pairs}
        except FileNotFoundError:
            if self.num_docs:
                log.warning("index of map %r has no field list; rebuilding", self.name)
                self.needs_rebuild = True
        except (OSError, ValueError, TypeError) as e:
            log.warning("field list of map %r is unreadable (%s); rebuilding", self.name, e)
            self.needs_rebuild = True

    def _save_fields(self) -> None:
        assert self.path is not None
        tmp = self.path / (FIELDS_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(sorted(self.field_targets.items()), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path / FIELDS_FILE)

    def _open(self, path: Path | None) -> tantivy.Index:
        if path is None:
            return tantivy.Index(self.schema.schema)
        if path.exists():
            try:
                return tantivy.Index(self.schema.schema, path=str(path), reuse=True)
            except (ValueError, OSError, RuntimeError) as e:
                log.warning(
                    "index of map %r at %s is unusable (%s); rebuilding", self.name, path, e
                )
                shutil.rmtree(path, ignore_errors=True)
                self.needs_rebuild = True
        path.mkdir(parents=True, exist_ok=True)
        return tantivy.Index(self.schema.schema, path=str(path), reuse=False)

    def _committed_keys(self) -> KeyFilter | None:
        """A filter of the keys with a committed document; None when the binding cannot list
        them (tantivy-py without ``Searcher.terms_with_prefix``)."""
        if not self.num_docs:
            return KeyFilter()
        list_terms = getattr(self._searcher, "terms_with_prefix", None)
        if list_terms is None:
            return None
        terms = list_terms(KEY_FIELD, "")
        return KeyFilter.of((str(t) for t, _ in terms), len(terms))

    def _may_hold(self, key: str) -> bool:
        """Record that ``key`` is about to be indexed; returns whether it may hold a document
        already (and so needs its delete)."""
        keys = self._keys
        return keys is None or keys.add(key)

    # -- writing -------------------------------------------------------------------------------

    def texts_for(self, value: Any) -> Texts:
        """The value's strings per target (new fields of an every-string-field map get a slot)."""
        if self.spec.fields is not None or type(value) is not dict:
            return self._targets_of(self.schema.field_texts(value))
        # an every-string-field map's map value: field -> target in one pass (the same texts
        # as field_texts + _targets_of, which only map keys that are not strings still need)
        out: Texts = {}
        targets = self.field_targets
        for k, v in value.items():
            t = type(v)
            if t is str:
                if not v:
                    continue
                strings = [v]
            elif t in _NO_TEXT:
                continue
            else:
                strings = string_leaves(v)
                if not strings:
                    continue
            if type(k) is not str:
                return self._targets_of(self.schema.field_texts(value))
            name = targets.get(k)
            if name is None:
                name = self._assign(k)
            if name in out:
                out[name].extend(strings)
            else:
                out[name] = strings
        return out

    def _targets_of(self, field_texts: FieldTexts) -> Texts:
        out: Texts = {}
        targets = self.field_targets
        for f, strings in field_texts.items():
            name = targets.get(f)
            if name is None:
                name = self._assign(f)
            if name in out:
                out[name].extend(strings)
            else:
                out[name] = strings
        return out

    def _assign(self, field: str) -> str:
        used = len(self.field_targets) - sum(
            1 for t in self.field_targets.values() if t == REST_SLOT
        )
        name = f"d{used}" if field != NON_MAP_FIELD and used < DYNAMIC_SLOTS else REST_SLOT
        self.field_targets[field] = name
        self.fields_version += 1
        self._fields_dirty = True
        return name

    def upsert(
        self, key: str, value_bytes: bytes, *, fresh: bool = False, expires: int | None = None
    ) -> Texts:
        """Index ``key`` with an LWW value (msgpack), expiring at ``expires`` (epoch millis) if
        given; returns the texts it was indexed with."""
        texts = self.texts_for(unpack_value(value_bytes))
        keys = self._keys
        if (keys is None or keys.add(key)) and not fresh:
            self._delete_key(key)
        doc = tantivy.Document()
        doc.add_text(KEY_FIELD, key)
        doc.add_bytes(VALUE_FIELD, value_bytes)
        if expires is not None:
            doc.add_unsigned(EXPIRES_FIELD, max(0, expires))
            self.has_expiring = True
        add_text = doc.add_text
        for name, strings in texts.items():
            for s in strings:
                add_text(name, s)
        self._adds.append(doc)
        if len(self._adds) >= ADD_BURST:
            self.hand_over()
        self.uncommitted += 1
        return texts

    def hand_over(self) -> None:
        """Give the writer the documents added since the last call.

        Added documents are held back and handed over in bursts: the writer's indexing thread
        busy-waits a while for each next document, which, fed one at a time, costs it more than
        indexing the document. Anything that must follow the adds in the writer's order (a
        delete, a commit) hands them over first."""
        adds = self._adds
        if adds:
            self._adds = []
            add = self._writer.add_document
            for doc in adds:
                add(doc)

    def _delete_key(self, key: str) -> None:
        self.hand_over()
        self._writer.delete_documents_by_term(KEY_FIELD, key)

    def delete(self, key: str) -> None:
        self._delete_key(key)
        # a later OR add before the commit must not see the old doc
        self._or_pending[key] = OrRecords({}, {})
        self.uncommitted += 1

    def or_add(
        self, key: str, tag: str, value_bytes: bytes, *, expires: int | None = None
    ) -> Texts:
        records = self._or_records(key)
        records.values[tag] = value_bytes
        if expires is None:
            records.expires.pop(tag, None)
        else:
            records.expires[tag] = expires
        return self._write_or(key, records)

    def or_remove(self, key: str, tag: str) -> tuple[bool, Texts | None]:
        """Drop one OR record: (whether anything changed, the remaining texts or None if gone)."""
        records = self._or_records(key)
        if records.values.pop(tag, None) is None:
            return False, None
        records.expires.pop(tag, None)
        if not records.values:
            self.delete(key)
            return True, None
        return True, self._write_or(key, records)

    def or_set(
        self,
        key: str,
        records: dict[str, bytes],
        *,
        fresh: bool = False,
        expires: dict[str, int] | None = None,
    ) -> Texts:
        """Index an OR key with all its live records (``tag -> msgpack value``, and the expiry
        of those that have one), e.g. from a scan."""
        return self._write_or(key, OrRecords(dict(records), dict(expires or {})), fresh=fresh)

    def _or_records(self, key: str) -> OrRecords:
        pending = self._or_pending.get(key)
        if pending is not None:
            return OrRecords(dict(pending.values), dict(pending.expires))
        doc = self._stored_doc(key)
        if doc is None:
            return OrRecords({}, {})
        raw = doc.get_first(OR_FIELD)
        got = unpack_value(raw) if raw else None
        values = {str(t): bytes(v) for t, v in got.items()} if isinstance(got, dict) else {}
        raw_exp = doc.get_first(OR_EXPIRES_FIELD)
        exp = unpack_value(raw_exp) if raw_exp else None
        expires = {str(t): int(e) for t, e in exp.items()} if isinstance(exp, dict) else {}
        return OrRecords(values, expires)

    def _write_or(self, key: str, records: OrRecords, *, fresh: bool = False) -> Texts:
        self._or_pending[key] = records
        values = [unpack_value(v) for v in records.values.values()]
        field_texts: FieldTexts = {}
        for v in values:
            self.schema.field_texts(v, field_texts)
        texts = self._targets_of(field_texts)
        if self._may_hold(key) and not fresh:
            self._delete_key(key)
        or_bytes = msgpack.packb(records.values, use_bin_type=True)
        value_bytes = msgpack.packb(values, use_bin_type=True)
        expires = records.expires_at
        or_expires = msgpack.packb(records.expires) if records.expires else b""
        self._adds.append(
            self.schema.document(
                key, texts, value_bytes, or_bytes, expires=expires, or_expires=or_expires
            )
        )
        if expires is not None:
            self.has_expiring = True
        self.uncommitted += 1
        return texts

    # -- expiry --------------------------------------------------------------------------------

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _expired_query(self, now_ms: int | None) -> tantivy.Query:
        """Documents whose record expired before ``now_ms`` (None: every one with an expiry)."""
        if now_ms is None:
            lower, upper = 0, None
        else:
            lower, upper = None, now_ms
        return tantivy.Query.range_query(
            self.schema.schema,
            EXPIRES_FIELD,
            tantivy.FieldType.Unsigned,
            lower,
            upper,
            include_upper=now_ms is None,
            use_inverted_index=True,
        )

    def _count_expiring(self, now_ms: int | None) -> int:
        return self._count(self._expired_query(now_ms))

    def _count(self, q: tantivy.Query) -> int:
        found = self._searcher.search(q, 1, count=True)
        return int(found.count)  # type: ignore[attr-defined]  # (missing from tantivy's stubs)

    def _unexpired(self, q: tantivy.Query) -> tantivy.Query:
        """``q`` without the documents whose record has expired (as is when none can expire)."""
        if not self.has_expiring:
            return q
        return tantivy.Query.boolean_query(
            [
                (tantivy.Occur.Must, q),
                (tantivy.Occur.MustNot, self._expired_query(self.now_ms())),
            ]
        )

    def purge_expired(self) -> int:
        """Delete the committed documents whose record has expired (visible at the next commit);
        returns how many. Searches already leave them out: this keeps the index from growing."""
        if not self.has_expiring:
            return 0
        expired = self._expired_query(self.now_ms())
        n = self._count(expired)
        if n:
            self.hand_over()
            self._writer.delete_documents_by_query(expired)
            self.uncommitted += 1
        return n

    def clear(self) -> None:
        self._adds = []  # deleted with the rest
        self._writer.delete_all_documents()
        self._or_pending.clear()
        self._keys = KeyFilter()
        self.has_expiring = False
        if self.spec.fields is None:
            self.field_targets = {}
            self.fields_version += 1
            self._fields_dirty = True
        self.uncommitted += 1

    def commit(self) -> None:
        """Make every applied change searchable (blocking; run it off the event loop)."""
        if self._fields_dirty and self.path is not None:
            self._save_fields()  # before the commit: a slot in use is always on record
        self._fields_dirty = False
        self.hand_over()
        self._writer.commit()
        self._index.reload()
        self._searcher = self._index.searcher()
        self._or_pending.clear()
        self.uncommitted = 0
        if self._keys is not None and self._keys.full:
            self._keys = self._committed_keys()  # a larger one: the index holds every key now

    def close(self) -> None:
        self._adds = []
        if self.uncommitted:
            self._writer.rollback()
        self._writer.wait_merging_threads()

    # -- reading -------------------------------------------------------------------------------

    @property
    def num_docs(self) -> int:
        return int(self._searcher.num_docs)

    def search(self, plan: QueryPlan, options: SearchOptions) -> list[Hit]:
        """Top ``limit`` documents by score, score > 0 and >= ``minScore``, best first."""
        if plan.query is None:
            return []
        searcher = self._searcher
        query = self._unexpired(plan.query)
        found = searcher.search(query, options.effective_limit, count=False).hits
        kept = [(float(s), a) for s, a in found if s > 0 and s >= options.min_score]
        if not kept:
            return []
        docs = [searcher.doc(a) for _, a in kept]
        keys = [str(d.get_first(KEY_FIELD)) for d in docs]
        if plan.probes is None:
            terms = [tuple(matched_terms(plan, DocTokens(self._doc_texts(d)))) for d in docs]
        else:
            terms = self._probe_terms(plan, keys, [a for _, a in kept])
        hits = []
        for (score, _), doc, key, matched in zip(kept, docs, keys, terms, strict=True):
            value = doc.get_first(VALUE_FIELD) if options.include_value else None
            hits.append(Hit(key, score, matched, bytes(value) if value else None))
        return hits

    def _probe_terms(
        self, plan: QueryPlan, keys: list[str], addrs: list[tantivy.DocAddress]
    ) -> list[tuple[str, ...]]:
        """Matched terms of the hits, asking the index which hits contain each positive clause."""
        assert plan.probes is not None
        probes = plan.probes
        if not probes:
            return [()] * len(keys)
        if plan.single_probe_covers_hits:
            return [probes[0].terms] * len(keys)
        only = self._only(keys)
        position = {(a.segment_ord, a.doc): i for i, a in enumerate(addrs)}
        out: list[dict[str, None]] = [{} for _ in keys]
        searcher = self._searcher
        Q, Occur = tantivy.Query, tantivy.Occur
        # One search per group of probes: probe j of a group scores exactly 2**j (a constant), so
        # a hit's score, a sum of powers of two, spells out which probes it contains (exact in
        # the f32 scores up to 2**23).
        for start in range(0, len(probes), PROBES_PER_SEARCH):
            group = probes[start : start + PROBES_PER_SEARCH]
            clauses = [(Occur.Must, only)]
            clauses.extend(
                (Occur.Should, Q.const_score_query(p.query, float(1 << j)))
                for j, p in enumerate(group)
            )
            for score, a in searcher.search(Q.boolean_query(clauses), len(keys), count=False).hits:
                i = position.get((a.segment_ord, a.doc))
                mask = round(score)
                if i is None or not mask:
                    continue
                found = out[i]
                for j, p in enumerate(group):
                    if mask >> j & 1:
                        found.update(dict.fromkeys(p.terms))
        return [tuple(d) for d in out]

    def scores_of(self, plan: QueryPlan, keys: Sequence[str]) -> dict[str, float]:
        """The scores of those of ``keys`` that match: the query run against just their documents
        (the same BM25 scores a full search gives them)."""
        if plan.query is None or not keys:
            return {}
        q = tantivy.Query.boolean_query(
            [(tantivy.Occur.Must, plan.query), (tantivy.Occur.Must, self._only(keys))]
        )
        searcher = self._searcher
        found = searcher.search(self._unexpired(q), len(keys), count=False).hits
        return {
            str(searcher.doc(addr).get_first(KEY_FIELD)): float(score)
            for score, addr in found
            if score > 0
        }

    def _only(self, keys: Sequence[str]) -> tantivy.Query:
        """Matches just the documents of ``keys``, scoring 0 (an intersection with it filters).

        A handful of keys is an OR of term lookups; a large set is tantivy's term-set query,
        which walks the key dictionary once (cheaper from a few hundred keys on)."""
        schema = self.schema.schema
        if len(keys) <= KEY_LOOKUP_LIMIT:
            q = tantivy.Query.boolean_query(
                [
                    (tantivy.Occur.Should, tantivy.Query.term_query(schema, KEY_FIELD, k))
                    for k in keys
                ]
            )
        else:
            q = tantivy.Query.term_set_query(schema, KEY_FIELD, list(keys))
        return tantivy.Query.const_score_query(q, 0.0)

    def _doc_texts(self, doc: tantivy.Document) -> Texts:
        raw_or = doc.get_first(OR_FIELD)
        if raw_or:
            records = unpack_value(raw_or)
            field_texts: FieldTexts = {}
            if isinstance(records, dict):
                for v in records.values():
                    self.schema.field_texts(unpack_value(v), field_texts)
            return self._targets_of(field_texts)
        return self.texts_for(unpack_value(doc.get_first(VALUE_FIELD) or b""))

    def _stored_doc(self, key: str) -> tantivy.Document | None:
        q = tantivy.Query.term_query(self.schema.schema, KEY_FIELD, key)
        found = self._searcher.search(q, 1, count=False).hits
        return self._searcher.doc(found[0][1]) if found else None

    def stored_texts_of(self, key: str) -> Texts | None:
        doc = self._stored_doc(key)
        return None if doc is None else self._doc_texts(doc)

    def stored_value(self, key: str) -> bytes | None:
        doc = self._stored_doc(key)
        v = doc.get_first(VALUE_FIELD) if doc is not None else None
        return bytes(v) if v else None
