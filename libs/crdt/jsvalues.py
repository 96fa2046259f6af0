"""Values written the way JavaScript writes them.

The TopGun client hashes strings that contain numbers and JSON, so a port must print both
exactly as JavaScript does: ``String(number)`` (ECMAScript Number::toString), ``JSON.stringify``
with its escaping rules, and two key-order quirks (CRDT.md sections 3 and 8.2).

Values are the JSON data model in Python form: ``None``, ``bool``, ``int``, ``float``, ``str``,
``list`` (or ``tuple``) and ``dict`` with ``str`` keys.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

_MAX_SAFE = 2**53
_ARRAY_INDEX_LIMIT = 2**32 - 1
_INDEX_RE = re.compile(r"(?:0|[1-9][0-9]*)\Z")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


# --- numbers -----------------------------------------------------------------------------------


def js_number_to_string(x: float | int) -> str:
    """``String(x)`` for a JavaScript number (float64): ``5``, ``0.1``, ``1e+21``, ``1e-7``, ``NaN``.

    Python ints are first taken as float64, as JavaScript would hold them (so integers above
    2**53 lose precision exactly as they do in the client).
    """
    if type(x) is int:
        if -_MAX_SAFE <= x <= _MAX_SAFE:
            return str(x)
        try:
            x = float(x)
        except OverflowError:
            return "Infinity" if x > 0 else "-Infinity"
    elif isinstance(x, bool):
        raise TypeError("a bool is not a number here; write it as true/false")
    x = float(x)
    if x != x:
        return "NaN"
    if x == 0.0:
        return "0"
    if x < 0:
        return "-" + js_number_to_string(-x)
    if math.isinf(x):
        return "Infinity"
    if x < _MAX_SAFE and x.is_integer():
        return str(int(x))
    digits, n = _shortest_digits(x)
    k = len(digits)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * (-n) + digits
    e = n - 1
    sign = "+" if e >= 0 else "-"
    mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{mantissa}e{sign}{abs(e)}"


def _shortest_digits(x: float) -> tuple[str, int]:
    """The shortest round-trip decimal digits of positive finite ``x`` and the exponent ``n``
    such that ``x == 0.d1d2...dk * 10**n`` (the ``k`` and ``n`` of Number::toString)."""
    r = repr(x)
    exp = 0
    if "e" in r:
        r, e = r.split("e")
        exp = int(e)
    if "." in r:
        ip, fp = r.split(".")
    else:
        ip, fp = r, ""
    combined = ip + fp
    stripped = combined.lstrip("0")
    n = len(ip) - (len(combined) - len(stripped)) + exp
    return stripped.rstrip("0"), n


def normalize_number(x: Any) -> Any:
    """An integral float with ``|x| < 2**53`` becomes an ``int``; anything else is returned as is.

    The client sends every number as a float64 when it does not fit 32 bits (HLC millis always);
    converting at the wire boundary keeps ``1700000000000.0`` from ever being printed as such.
    """
    if type(x) is float and x.is_integer() and -_MAX_SAFE < x < _MAX_SAFE:
        return int(x)
    return x


def normalize_value(v: Any) -> Any:
    """``normalize_number`` applied through dicts and lists (tuples become lists)."""
    t = type(v)
    if t is float:
        return normalize_number(v)
    if t is dict:
        return {k: normalize_value(x) for k, x in v.items()}
    if t is list or t is tuple:
        return [normalize_value(x) for x in v]
    return v


# --- JSON as JSON.stringify writes it -----------------------------------------------------------


def _utf16_key(s: str) -> bytes:
    return s.encode("utf-16-be", "surrogatepass")


def sort_keys_utf16(keys: Iterable[str]) -> list[str]:
    """Keys sorted as JavaScript's ``Array.prototype.sort`` sorts strings: by UTF-16 code units."""
    ks = list(keys)
    if "".join(ks).isascii():
        return sorted(ks)
    return sorted(ks, key=_utf16_key)


def is_array_index(key: str) -> bool:
    """Whether JavaScript treats ``key`` as an array index (listed first, in numeric order)."""
    return bool(_INDEX_RE.match(key)) and (len(key) < 10 or int(key) < _ARRAY_INDEX_LIMIT)


def js_key_order(keys: Iterable[str]) -> list[str]:
    """The order JavaScript enumerates an object built with ``keys`` in this insertion order:
    array-index keys first in numeric order, then the other keys in insertion order."""
    ks = list(keys)
    index = [k for k in ks if is_array_index(k)]
    if not index:
        return ks
    index.sort(key=int)
    return index + [k for k in ks if not is_array_index(k)]


def _fix_surrogates(s: str) -> str:
    """Escape lone surrogates as JSON.stringify does (``\\udxxx``); keep valid pairs raw."""
    out: list[str] = []
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        o = ord(c)
        if 0xD800 <= o <= 0xDBFF and i + 1 < n and 0xDC00 <= ord(s[i + 1]) <= 0xDFFF:
            out.append(c + s[i + 1])
            i += 2
            continue
        if 0xD800 <= o <= 0xDFFF:
            out.append(f"\\u{o:04x}")
        else:
            out.append(c)
        i += 1
    return "".join(out)


def json_string(s: str) -> str:
    """A string literal exactly as ``JSON.stringify`` writes it (raw non-ASCII, ``\\u00xx``
    lowercase for control characters, lone surrogates escaped)."""
    out = json.dumps(s, ensure_ascii=False)
    if _SURROGATE_RE.search(out):
        out = _fix_surrogates(out)
    return out


def _json_number(x: float | int) -> str:
    if type(x) is float and not math.isfinite(x):
        return "null"
    return js_number_to_string(x)


def _write(v: Any, out: list[str], keys_of: Any) -> None:
    if v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif isinstance(v, str):
        out.append(json_string(v))
    elif isinstance(v, int | float):
        out.append(_json_number(v))
    elif isinstance(v, list | tuple):
        out.append("[")
        for i, x in enumerate(v):
            if i:
                out.append(",")
            _write(x, out, keys_of)
        out.append("]")
    elif isinstance(v, Mapping):
        out.append("{")
        first = True
        for k in keys_of(v):
            if not first:
                out.append(",")
            first = False
            out.append(json_string(k))
            out.append(":")
            _write(v[k], out, keys_of)
        out.append("}")
    else:
        raise TypeError(f"cannot write a {type(v).__name__} as JSON")


def _canonical_keys(obj: Mapping[str, Any]) -> list[str]:
    return js_key_order(sort_keys_utf16(obj.keys()))


def canonical_json(v: Any) -> str:
    """``JSON.stringify`` of ``v`` with every object's keys sorted recursively, as TopGun's
    ``hashObject`` writes it: keys sorted by UTF-16 units, then array-index keys moved first in
    numeric order (the object is rebuilt, and JavaScript lists index keys first)."""
    out: list[str] = []
    _write(v, out, _canonical_keys)
    return "".join(out)


def or_value_string(v: Any) -> str:
    """The value part of an OR-map entry hash (``stringifyValue`` in ORMapMerkle.ts).

    ``None`` is ``null``; strings are raw (no quotes); numbers and booleans as ``String()``
    writes them; objects and arrays as ``JSON.stringify(value, Object.keys(value).sort())``,
    whose second argument is a key whitelist applied at every depth, in that sorted order.
    """
    if v is None:
        return "null"
    if isinstance(v, str):
        return v
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int | float):
        return js_number_to_string(v)
    if isinstance(v, Mapping):
        whitelist = sort_keys_utf16(v.keys())
    elif isinstance(v, list | tuple):
        whitelist = sort_keys_utf16(str(i) for i in range(len(v)))
    else:
        raise TypeError(f"cannot write a {type(v).__name__} as an OR value")

    def keys_of(obj: Mapping[str, Any]) -> list[str]:
        return [k for k in whitelist if k in obj]

    out: list[str] = []
    _write(v, out, keys_of)
    return "".join(out)
