"""The tantivy layout of one map's index, and how a stored value becomes an indexed document.

Every index has ``_key`` (the record key, one raw term, stored) and ``_v`` (the record's value as
msgpack, stored, so results can carry it and changed documents can be re-read). A record with a
TTL also gets ``_exp``, the time it expires (``millis + ttlMs``, indexed): searches leave out
documents whose ``_exp`` has passed, the way the client hides expired records. The text lives in
*targets*, the tantivy text fields a query term is looked up in; each is a plain text field with
positions and field norms, so every field gets real BM25 (length-normalised) scoring:

* maps with configured fields get one text field per configured path, ``t0``, ``t1``, …, each
  with its own analyzer; every string leaf under the path is indexed.
* every-string-field maps (``MapSpec.fields`` None) get a pool of ``DYNAMIC_SLOTS`` text fields,
  ``d0``, ``d1``, …, handed out to the value's top-level fields in the order they first appear
  (the assignment is kept with the index, ``MapIndex``). All string leaves below a top-level field
  (recursively, through maps and arrays) are indexed under its slot, so ``title:foo`` finds
  ``foo`` in ``value["title"]`` and a bare ``foo`` is looked up in every field seen so far. A
  value that is not a map, and fields beyond the pool, are indexed under ``drest``.

(tantivy's JSON fields would need no pool, but they keep no field norms, so BM25 could not tell a
short document from a long one.)

OR-map keys hold several values; they are indexed as one document carrying all of them, with the
live records kept in ``_or`` (msgpack ``{tag: value}``) so a later add or remove can rebuild it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import tantivy

from services.search.analysis import tokenizer_name
from services.search.mapspec import MapSpec

KEY_FIELD = "_key"
VALUE_FIELD = "_v"
OR_FIELD = "_or"
OR_EXPIRES_FIELD = "_ore"  # OR keys with expiring records: msgpack {tag: expiry millis}
EXPIRES_FIELD = "_exp"  # when the document's record expires (millis + ttlMs); absent: never
DYNAMIC_SLOTS = 32
REST_SLOT = "drest"
NON_MAP_FIELD = "_"  # the field name of a value that is not a map

Texts = dict[str, list[str]]  # target (tantivy field) -> the strings indexed under it
FieldTexts = dict[str, list[str]]  # map field name -> its strings


@dataclass(frozen=True, slots=True)
class Target:
    """One tantivy field a query term is looked up in."""

    name: str  # tantivy field name, e.g. "t0" or "d3"
    field: str  # the map's field name as queries and boosts spell it
    analyzer: str
    boost: float = 1.0


def string_leaves(value: Any, out: list[str] | None = None) -> list[str]:
    """Every non-empty string inside ``value`` (maps and arrays walked depth-first, in order)."""
    if out is None:
        out = []
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if v:
                out.append(v)
        elif isinstance(v, dict):
            stack.extend(reversed(list(v.values())))
        elif isinstance(v, list | tuple):
            stack.extend(reversed(v))
    return out


def _at_path(value: Any, parts: Sequence[str]) -> list[Any]:
    """The values at a dotted path; arrays met on the way are walked element by element."""
    current = [value]
    for part in parts:
        nxt: list[Any] = []
        for v in current:
            if isinstance(v, dict):
                if part in v:
                    nxt.append(v[part])
            elif isinstance(v, list | tuple):
                nxt.extend(x[part] for x in v if isinstance(x, dict) and part in x)
        current = nxt
    return current


class MapSchema:
    """Schema, field extraction and document building for one map's spec."""

    __slots__ = ("_field_parts", "_static", "schema", "spec")

    def __init__(self, spec: MapSpec) -> None:
        self.spec = spec
        sb = tantivy.SchemaBuilder()
        sb.add_text_field(KEY_FIELD, stored=True, tokenizer_name="raw", index_option="basic")
        sb.add_bytes_field(VALUE_FIELD, stored=True)
        sb.add_bytes_field(OR_FIELD, stored=True)
        sb.add_bytes_field(OR_EXPIRES_FIELD, stored=True)
        sb.add_unsigned_field(EXPIRES_FIELD, indexed=True)
        self._static: dict[str, Target] = {}
        self._field_parts: tuple[tuple[str, tuple[str, ...]], ...] = ()
        if spec.fields is None:
            tok = tokenizer_name(spec.analyzer)
            for i in range(DYNAMIC_SLOTS):
                sb.add_text_field(f"d{i}", tokenizer_name=tok)
            sb.add_text_field(REST_SLOT, tokenizer_name=tok)
        else:
            for i, f in enumerate(spec.fields):
                sb.add_text_field(f"t{i}", tokenizer_name=tokenizer_name(f.analyzer))
                self._static[f.path] = Target(f"t{i}", f.path, f.analyzer, f.boost)
            self._field_parts = tuple((f.path, tuple(f.path.split("."))) for f in spec.fields)
        self.schema = sb.build()

    @property
    def static_fields(self) -> dict[str, str]:
        """Configured field -> target name (empty for every-string-field maps)."""
        return {f: t.name for f, t in self._static.items()}

    def field_texts(self, value: Any, out: FieldTexts | None = None) -> FieldTexts:
        """The strings of ``value`` per map field (fields without text are left out)."""
        if out is None:
            out = {}
        if self.spec.fields is None:
            if isinstance(value, dict):
                for k, v in value.items():
                    if type(v) is str:  # the common flat case, without the walk
                        if v:
                            name = k if type(k) is str else str(k)
                            if name in out:
                                out[name].append(v)
                            else:
                                out[name] = [v]
                        continue
                    strings = string_leaves(v)
                    if strings:
                        out.setdefault(str(k), []).extend(strings)
            else:
                strings = string_leaves(value)
                if strings:
                    out.setdefault(NON_MAP_FIELD, []).extend(strings)
            return out
        for path, parts in self._field_parts:
            found: list[str] = []
            for v in _at_path(value, parts):
                string_leaves(v, found)
            if found:
                out.setdefault(path, []).extend(found)
        return out

    def document(
        self,
        key: str,
        texts: Texts,
        value_bytes: bytes,
        or_bytes: bytes = b"",
        *,
        expires: int | None = None,
        or_expires: bytes = b"",
    ) -> tantivy.Document:
        doc = tantivy.Document()
        doc.add_text(KEY_FIELD, key)
        doc.add_bytes(VALUE_FIELD, value_bytes)
        if or_bytes:
            doc.add_bytes(OR_FIELD, or_bytes)
        if or_expires:
            doc.add_bytes(OR_EXPIRES_FIELD, or_expires)
        if expires is not None:
            doc.add_unsigned(EXPIRES_FIELD, max(0, expires))
        for name, strings in texts.items():
            for s in strings:
                doc.add_text(name, s)
        return doc

    def analyzer_of(self, target_name: str) -> str:
        if self.spec.fields is None:
            return self.spec.analyzer
        return self.spec.fields[int(target_name[1:])].analyzer

    def analyzer_for_field(self, field: str) -> str:
        static = self._static.get(field)
        return static.analyzer if static else self.spec.analyzer

    def analyzers(self) -> frozenset[str]:
        if self.spec.fields is None:
            return frozenset((self.spec.analyzer,))
        return frozenset(f.analyzer for f in self.spec.fields)

    def targets(
        self,
        fields: Mapping[str, str],
        *,
        only: Sequence[str] | None = None,
        boosts: Mapping[str, float] | None = None,
    ) -> list[Target]:
        """Where an unqualified term is looked up: every field in ``fields`` (field -> target
        name), or just those in ``only``, each boosted. Fields sharing a target appear once."""
        seen: dict[str, Target] = {}
        for f, name in fields.items():
            if only and f not in only:
                continue
            t = self._target(f, name, boosts)
            prev = seen.get(name)
            if prev is None or t.boost > prev.boost:
                seen[name] = t
        return sorted(seen.values(), key=lambda t: t.name)

    def target_for(
        self, field: str, fields: Mapping[str, str], boosts: Mapping[str, float] | None = None
    ) -> Target | None:
        """The target of a field a query names (``title:foo``); None when it has none (yet)."""
        name = fields.get(field)
        return None if name is None else self._target(field, name, boosts)

    def _target(self, field: str, name: str, boosts: Mapping[str, float] | None) -> Target:
        static = self._static.get(field)
        base, analyzer = (static.boost, static.analyzer) if static else (1.0, self.spec.analyzer)
        boost = base * float(boosts.get(field, 1.0)) if boosts else base
        return Target(name, field, analyzer, boost)
