"""Which maps are searchable, and which of their fields, with which analyzer and boost.

The configuration is a JSON document (a file or an inline string)::

    {
      "default": {"analyzer": "default"},
      "maps": {
        "articles": {"fields": {"title": {"analyzer": "en_stem", "boost": 2.0},
                                "body": {"analyzer": "en_stem"},
                                "author.name": {}}},
        "audit": false
      }
    }

``default`` applies to every map not listed: each string leaf of a value is indexed (recursively,
under the top-level field it sits in), with one analyzer. ``"default": false`` makes only the
listed maps searchable. A listed map either names its fields (dotted paths into the value; every
string leaf under a path is indexed), with an analyzer and a default boost per field, or is
``false`` (never indexed) or ``{"analyzer": ...}`` (all string fields, like the default).
Without any configuration every map is searchable with the ``default`` analyzer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.search.analysis import ANALYZER_NAMES, UnknownAnalyzer


class MapConfigError(ValueError):
    """The search map configuration is malformed."""


@dataclass(frozen=True, slots=True)
class FieldSpec:
    path: str  # dotted path into the value
    analyzer: str = "default"
    boost: float = 1.0


@dataclass(frozen=True, slots=True)
class MapSpec:
    """How one map is indexed. ``fields`` None: every string field, discovered as values arrive."""

    fields: tuple[FieldSpec, ...] | None = None
    analyzer: str = "default"  # for the every-string-field mode

    @property
    def dynamic(self) -> bool:
        return self.fields is None

    def fingerprint(self) -> str:
        """Changes whenever the index layout would; an index built for another layout is rebuilt."""
        if self.fields is None:
            desc: Any = {"dynamic": self.analyzer, "slots": 32}
        else:
            # boosts are applied at query time and do not change the index
            desc = [[f.path, f.analyzer] for f in self.fields]
        raw = json.dumps(desc, sort_keys=True).encode()
        return hashlib.sha1(raw).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SearchableMaps:
    default: MapSpec | None = MapSpec()
    maps: Mapping[str, MapSpec | None] = field(default_factory=dict)

    def spec_for(self, map_name: str) -> MapSpec | None:
        """The spec of ``map_name``, or None when the map is not searchable."""
        if map_name in self.maps:
            return self.maps[map_name]
        return self.default

    @property
    def explicit_maps(self) -> tuple[str, ...] | None:
        """The only maps to follow when nothing else is searchable; None when every map may be."""
        if self.default is not None:
            return None
        return tuple(sorted(m for m, s in self.maps.items() if s is not None))

    @classmethod
    def parse(cls, source: str) -> SearchableMaps:
        """From a JSON string or the path of a JSON file; an empty source means the defaults."""
        source = source.strip()
        if not source:
            return cls()
        if not source.startswith(("{", "[")):
            try:
                source = Path(source).read_text()
            except OSError as e:
                raise MapConfigError(f"cannot read search map configuration {source!r}: {e}") from e
        try:
            doc = json.loads(source)
        except json.JSONDecodeError as e:
            raise MapConfigError(f"search map configuration is not valid JSON: {e}") from e
        return cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: Any) -> SearchableMaps:
        if not isinstance(doc, dict):
            raise MapConfigError("search map configuration must be a JSON object")
        unknown = set(doc) - {"default", "maps"}
        if unknown:
            raise MapConfigError(f"unknown keys {sorted(unknown)}; expected 'default' and 'maps'")
        default = _map_spec("default", doc.get("default", {}))
        maps_doc = doc.get("maps", {})
        if not isinstance(maps_doc, dict):
            raise MapConfigError("'maps' must be an object of map name -> map configuration")
        maps = {str(name): _map_spec(f"maps.{name}", m) for name, m in maps_doc.items()}
        return cls(default, maps)


def _analyzer(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise MapConfigError(f"{where}.analyzer must be a string")
    if value not in ANALYZER_NAMES:
        raise MapConfigError(f"{where}: {UnknownAnalyzer(value)}")
    return value


def _map_spec(where: str, doc: Any) -> MapSpec | None:
    if doc is False or doc is None:
        return None
    if doc is True:
        return MapSpec()
    if not isinstance(doc, dict):
        raise MapConfigError(f"{where} must be an object, true or false")
    unknown = set(doc) - {"fields", "analyzer"}
    if unknown:
        raise MapConfigError(f"{where}: unknown keys {sorted(unknown)}")
    analyzer = _analyzer(where, doc.get("analyzer", "default"))
    fields_doc = doc.get("fields")
    if fields_doc is None:
        return MapSpec(None, analyzer)
    if isinstance(fields_doc, list):
        fields_doc = {str(f): {} for f in fields_doc}
    if not isinstance(fields_doc, dict) or not fields_doc:
        raise MapConfigError(f"{where}.fields must be a non-empty object or list of field paths")
    fields = []
    for path, fdoc in fields_doc.items():
        fwhere = f"{where}.fields.{path}"
        if not path or path.startswith(".") or path.endswith("."):
            raise MapConfigError(f"{fwhere}: a field path is a dotted name like 'author.name'")
        if not isinstance(fdoc, dict):
            raise MapConfigError(f"{fwhere} must be an object")
        unknown = set(fdoc) - {"analyzer", "boost"}
        if unknown:
            raise MapConfigError(f"{fwhere}: unknown keys {sorted(unknown)}")
        boost = fdoc.get("boost", 1.0)
        if not isinstance(boost, int | float) or isinstance(boost, bool) or boost <= 0:
            raise MapConfigError(f"{fwhere}.boost must be a positive number")
        fields.append(
            FieldSpec(path, _analyzer(fwhere, fdoc.get("analyzer", analyzer)), float(boost))
        )
    return MapSpec(tuple(fields), analyzer)
