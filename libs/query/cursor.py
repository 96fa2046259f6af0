"""Opaque pagination cursors, in HEAD's format.

A cursor is base64url (no padding) of the JSON object
``{sortValues: [{field, value, direction}], lastKey, predicateHash, sortHash, timestamp}``:
the sort-field values and key of the last row of a page, hashes of the filter and sort it was
made for, and its creation time in milliseconds. A later query with that cursor returns only
rows strictly after that position (sort fields, then key ascending).

Status of a supplied cursor (``QUERY_RESP.cursorStatus``):

* ``"none"`` — no cursor supplied;
* ``"invalid"`` — it does not decode, or it was made for another filter or sort;
* ``"expired"`` — older than :data:`CURSOR_MAX_AGE_MS` (10 minutes) at ``now_ms``;
* ``"valid"`` — otherwise; only then is the position applied. With an invalid or expired
  cursor the query is answered from the first row.

The hashes are FNV-1a of the canonical JSON of the filter (``predicate`` when present, else
``where``) and of the sort in array form. Time is always passed in.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from libs.crdt.hashing import fnv1a
from libs.query.sorting import SortSpec

CursorStatus = Literal["valid", "expired", "invalid", "none"]

CURSOR_MAX_AGE_MS: Final = 10 * 60 * 1000

_js_canonical_json: Callable[[Any], str] | None
try:  # the TopGun-compatible canonical JSON printer, when libs/crdt provides it
    from libs.crdt.jsvalues import canonical_json as _crdt_canonical_json

    _js_canonical_json = _crdt_canonical_json
except ImportError:  # pragma: no cover - depends on the state of libs/crdt
    _js_canonical_json = None


def canonical_json(value: Any) -> str:
    """JSON with object keys sorted recursively; the input of the cursor hashes."""
    if _js_canonical_json is not None:
        try:
            return str(_js_canonical_json(value))
        except (TypeError, ValueError):
            pass
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)


def filter_hash(predicate: Mapping[str, Any] | None, where: Mapping[str, Any] | None) -> int:
    """``predicateHash``: the filter a cursor belongs to (``predicate`` wins over ``where``)."""
    return fnv1a(canonical_json(predicate if predicate is not None else where))


def sort_hash(spec: SortSpec) -> int:
    """``sortHash``: the sort a cursor belongs to, in HEAD's array form."""
    return fnv1a(canonical_json(spec.to_wire()))


@dataclass(frozen=True, slots=True)
class Cursor:
    """A decoded cursor: the position of the last row of a page and what it was made for."""

    sort_values: tuple[Any, ...]
    fields: tuple[str, ...]
    directions: tuple[str, ...]
    last_key: str
    predicate_hash: int
    sort_hash: int
    timestamp: int


def encode_cursor(
    spec: SortSpec,
    values: Sequence[Any],
    last_key: str,
    *,
    predicate_hash: int,
    sort_hash: int,
    timestamp_ms: int,
) -> str:
    """An opaque cursor for the row ``last_key`` whose sort-field values are ``values``."""
    data = {
        "sortValues": [
            {"field": f.field, "value": _jsonable(v), "direction": f.direction}
            for f, v in zip(spec.fields, values, strict=True)
        ],
        "lastKey": last_key,
        "predicateHash": predicate_hash,
        "sortHash": sort_hash,
        "timestamp": timestamp_ms,
    }
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=repr)
    return base64.urlsafe_b64encode(text.encode("utf-8")).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> Cursor | None:
    """The cursor's contents, or ``None`` when it is not a well-formed cursor."""
    if not isinstance(cursor, str) or not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    entries = data.get("sortValues")
    last_key = data.get("lastKey")
    p_hash = data.get("predicateHash")
    s_hash = data.get("sortHash")
    timestamp = data.get("timestamp")
    if not isinstance(entries, list) or not isinstance(last_key, str):
        return None
    if not all(_is_int(x) for x in (p_hash, s_hash)) or not _is_number(timestamp):
        return None
    fields: list[str] = []
    directions: list[str] = []
    values: list[Any] = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("field"), str):
            return None
        direction = entry.get("direction", "asc")
        if direction not in ("asc", "desc"):
            return None
        fields.append(entry["field"])
        directions.append(direction)
        values.append(entry.get("value"))
    return Cursor(
        sort_values=tuple(values),
        fields=tuple(fields),
        directions=tuple(directions),
        last_key=last_key,
        predicate_hash=int(p_hash),  # type: ignore[arg-type]
        sort_hash=int(s_hash),  # type: ignore[arg-type]
        timestamp=int(timestamp),  # type: ignore[arg-type]
    )


def check_cursor(
    cursor: str | None,
    *,
    predicate_hash: int,
    sort_hash: int,
    spec: SortSpec,
    now_ms: int,
    max_age_ms: int = CURSOR_MAX_AGE_MS,
) -> tuple[CursorStatus, Cursor | None]:
    """The status of a supplied cursor and, when ``"valid"``, its decoded position."""
    if cursor is None:
        return "none", None
    decoded = decode_cursor(cursor)
    if decoded is None:
        return "invalid", None
    if decoded.predicate_hash != predicate_hash or decoded.sort_hash != sort_hash:
        return "invalid", None
    wanted = tuple(f.field for f in spec.fields), tuple(f.direction for f in spec.fields)
    if (decoded.fields, decoded.directions) != wanted:
        return "invalid", None
    if now_ms - decoded.timestamp > max_age_ms:
        return "expired", None
    return "valid", decoded


def _jsonable(value: Any) -> Any:
    """Sort values as JSON carries them (NaN and infinities as Python's JSON writes them).

    Byte strings travel as their base64 text, so a cursor positioned on a bytes sort value
    resumes at the equivalent string position: bytes are not meant as sort keys.
    """
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    return value


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
