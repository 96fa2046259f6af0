"""The OR-map entry hash (``hashORMapEntry`` / ``hashORMapRecord`` in ORMapMerkle.ts; CRDT.md 8.2).

An entry is one key with its live records. Its hashed text is ``"key:" + key`` followed by one
part per record in ascending tag order (UTF-16 code units), joined with ``"|"``; a part is
``tag:value:millis:counter:nodeId`` plus ``:ttl=<ttlMs>`` when the record carries a ttlMs
property (even ``null``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from libs.crdt.hashing import fnv1a
from libs.crdt.hlc import Timestamp
from libs.crdt.jsvalues import js_number_to_string, or_value_string, sort_keys_utf16


class OrRecordLike(Protocol):
    @property
    def value(self) -> Any: ...
    @property
    def timestamp(self) -> Timestamp: ...
    @property
    def tag(self) -> str: ...
    @property
    def ttl_ms(self) -> int | float | None: ...
    @property
    def ttl_null(self) -> bool: ...


def or_record_string(record: OrRecordLike, tag: str | None = None) -> str:
    """The text of one record's part of the entry hash."""
    ts = record.timestamp
    v = record.value
    text = v if type(v) is str else or_value_string(v)
    s = f"{record.tag if tag is None else tag}:{text}:{ts[0]}:{ts[1]}:{ts[2]}"
    ttl = record.ttl_ms
    if ttl is not None:
        s += ":ttl=" + js_number_to_string(ttl)
    elif record.ttl_null:
        s += ":ttl=null"
    return s


def or_entry_string(key: str, records: Mapping[str, OrRecordLike] | Iterable[OrRecordLike]) -> str:
    """The exact text ``hashORMapEntry`` hashes. ``records`` is tag -> record or a list of
    records (then each record's own tag is used)."""
    tagged = records if isinstance(records, Mapping) else {r.tag: r for r in records}
    if len(tagged) == 1:
        ((tag, rec),) = tagged.items()
        return f"key:{key}|{or_record_string(rec, tag)}"
    parts = [f"key:{key}"]
    for tag in sort_keys_utf16(tagged):
        parts.append(or_record_string(tagged[tag], tag))
    return "|".join(parts)


def hash_or_entry(key: str, records: Mapping[str, OrRecordLike] | Iterable[OrRecordLike]) -> int:
    """``hashORMapEntry(key, records)``: the OR tree's leaf entry for ``key``."""
    return fnv1a(or_entry_string(key, records))


def hash_or_record(record: OrRecordLike) -> int:
    """``hashORMapRecord(record)`` (exported by TopGun, unused by the sync protocol)."""
    return fnv1a(or_record_string(record))
