"""The record shapes carried by client messages (PROTOCOL.md section 3).

``LwwRecord`` is ``{value, timestamp, ttlMs?}`` (``value: nil`` is a tombstone); ``OrRecord`` adds
the ``tag`` of one OR-map add; ``OrEntry`` is one OR-map key with its records and the tombstoned
tags, as exchanged during OR-map sync. An LWW ``ttlMs: nil`` is read as absent; an OR record
keeps it as ``ttl_null`` because the client hashes it as ``:ttl=null``.

The record types are libs.crdt's (``LwwRecord``, ``OrRecord``, named tuples); this module reads
them from decoded frames with errors that name the field, building them with ``tuple.__new__``
because the write path builds one per op.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from libs.crdt.lww import LwwRecord
from libs.crdt.ormap import OrRecord
from libs.wire.errors import BadFrame
from libs.wire.fields import bad, kind_of, timestamp, to_int


@dataclass(frozen=True, slots=True)
class OrEntry:
    key: str
    records: tuple[OrRecord, ...]
    tombstones: tuple[str, ...]

    def to_wire(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "records": [r.to_wire() for r in self.records],
            "tombstones": list(self.tombstones),
        }


_tuple_new = tuple.__new__


def _ttl(m: Mapping[Any, Any], field: str) -> int | None:
    ttl = m.get("ttlMs")
    if ttl is None:
        return None
    return to_int(ttl, f"{field}.ttlMs")


def lww_record_from_wire(value: Any, field: str = "record") -> LwwRecord:
    """An LWW record map; ``BadFrame`` names ``field`` and the bad part."""
    if type(value) is not dict and not isinstance(value, Mapping):
        raise bad(field, "a record map {value, timestamp}", value)
    ts = value.get("timestamp")
    if ts is None:
        raise BadFrame(f"{field}.timestamp is missing")
    ttl = value.get("ttlMs")
    return _tuple_new(
        LwwRecord,
        (
            value.get("value"),
            timestamp(ts, f"{field}.timestamp"),
            None if ttl is None else _ttl(value, field),
        ),
    )


def or_record_from_wire(value: Any, field: str = "orRecord") -> OrRecord:
    """An OR record map ``{value, timestamp, tag, ttlMs?}``."""
    if type(value) is not dict and not isinstance(value, Mapping):
        raise bad(field, "an OR record map {value, timestamp, tag}", value)
    ts = value.get("timestamp")
    if ts is None:
        raise BadFrame(f"{field}.timestamp is missing")
    tag = value.get("tag")
    if type(tag) is not str:
        if tag is None:
            raise BadFrame(f"{field}.tag is missing")
        raise bad(f"{field}.tag", "a string", tag)
    ttl = value.get("ttlMs")
    return _tuple_new(
        OrRecord,
        (
            value.get("value"),
            timestamp(ts, f"{field}.timestamp"),
            tag,
            None if ttl is None else _ttl(value, field),
            ttl is None and "ttlMs" in value,
        ),
    )


def or_entry_from_wire(value: Any, field: str = "entry") -> OrEntry:
    """An OR-map sync entry ``{key, records: ORRecord[], tombstones: string[]}``."""
    if not isinstance(value, Mapping):
        raise bad(field, "an entry map {key, records, tombstones}", value)
    key = value.get("key")
    if type(key) is not str:
        raise bad(f"{field}.key", "a string", key)
    raw_records = value.get("records")
    if raw_records is None:
        raw_records = []
    if not isinstance(raw_records, list):
        raise bad(f"{field}.records", "an array of OR records", raw_records)
    records = tuple(
        or_record_from_wire(r, f"{field}.records[{i}]") for i, r in enumerate(raw_records)
    )
    raw_tombs = value.get("tombstones")
    if raw_tombs is None:
        raw_tombs = []
    if not isinstance(raw_tombs, list):
        raise bad(f"{field}.tombstones", "an array of tags", raw_tombs)
    for i, tag in enumerate(raw_tombs):
        if type(tag) is not str:
            raise BadFrame(f"{field}.tombstones[{i}] must be a tag string, got {kind_of(tag)}")
    return OrEntry(key, records, tuple(raw_tombs))


def entries_from_wire(value: Any, field: str = "entries") -> tuple[OrEntry, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise bad(field, "an array of entries", value)
    try:
        return tuple(or_entry_from_wire(e, f"[{i}]") for i, e in enumerate(value))
    except BadFrame as err:
        raise BadFrame(f"{field}{err.message}") from None


__all__ = [
    "LwwRecord",
    "OrEntry",
    "OrRecord",
    "entries_from_wire",
    "lww_record_from_wire",
    "or_entry_from_wire",
    "or_record_from_wire",
]
