"""MsgPack byte-identical to what the TopGun TypeScript client writes (CRDT.md section 10).

The client's ``serialize(x)`` is msgpackr's ``pack`` after ``stripUndefined``. Its output differs
from plain msgpack in three ways, all reproduced here:

* every object is a ``map16`` (``0xde`` + 2-byte count), even an empty one;
* numbers follow JavaScript: a value is written as an integer only when it is integral and fits
  uint32 or int32, everything else is float64 (HLC millis always are); ``1.0`` is ``01``;
* object keys come in JavaScript enumeration order: array-index keys (``"0"``, ``"10"``) first in
  numeric order, then the others in insertion order.

``bytes`` become objects keyed ``"0"``, ``"1"``, ... as ``stripUndefined`` does to a Uint8Array,
so the client never sends ``bin``. Integer map keys are written as their decimal strings.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping
from typing import Any

_F64 = struct.Struct(">Bd")
_U16 = struct.Struct(">BH")
_U32 = struct.Struct(">BI")
_I16 = struct.Struct(">Bh")
_I32 = struct.Struct(">Bi")

_UINT32_END = 2**32
_INT32_MIN = -(2**31)
_ARRAY_INDEX_END = 2**32 - 1
_INDEX_RE = re.compile(r"(?:0|[1-9][0-9]*)\Z")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_SHORT_STRING_UNITS = 64  # msgpackr encodes shorter strings itself, longer ones as WHATWG UTF-8


def encode_js(obj: Any) -> bytes:
    """``obj`` as the TypeScript client's ``serialize()`` writes it, byte for byte.

    Accepts ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, lists/tuples and mappings;
    anything else raises ``TypeError``.
    """
    out = bytearray()
    _pack(obj, out)
    return bytes(out)


def _pack(v: Any, out: bytearray) -> None:
    t = type(v)
    if t is str:
        _pack_str(v, out)
    elif t is dict:
        _pack_map(v, out)
    elif t is int or t is float:
        _pack_number(v, out)
    elif v is None:
        out.append(0xC0)
    elif v is True:
        out.append(0xC3)
    elif v is False:
        out.append(0xC2)
    elif t is list or t is tuple:
        _pack_array_header(len(v), out)
        for x in v:
            _pack(x, out)
    elif isinstance(v, Mapping):
        _pack_map(v, out)
    elif isinstance(v, bytes | bytearray | memoryview):
        _pack_map({str(i): b for i, b in enumerate(bytes(v))}, out)
    elif isinstance(v, str):
        _pack_str(str(v), out)
    elif isinstance(v, int | float):
        _pack_number(float(v) if isinstance(v, float) else int(v), out)
    elif isinstance(v, list | tuple):
        _pack(list(v), out)
    else:
        raise TypeError(f"cannot encode a {type(v).__name__} as client MsgPack")


def _pack_number(x: int | float, out: bytearray) -> None:
    if type(x) is float:
        if not math.isfinite(x) or not x.is_integer():
            out += _F64.pack(0xCB, x)
            return
        n = int(x)  # -0.0 becomes 0, as msgpackr's uint32 test does
    else:
        n = int(x)
    if 0 <= n < _UINT32_END:
        if n < 0x80:
            out.append(n)
        elif n < 0x100:
            out.append(0xCC)
            out.append(n)
        elif n < 0x10000:
            out += _U16.pack(0xCD, n)
        else:
            out += _U32.pack(0xCE, n)
    elif _INT32_MIN <= n < 0:
        if n >= -0x20:
            out.append(n & 0xFF)
        elif n >= -0x80:
            out.append(0xD0)
            out.append(n & 0xFF)
        elif n >= -0x8000:
            out += _I16.pack(0xD1, n)
        else:
            out += _I32.pack(0xD2, n)
    else:
        try:
            f = float(n)
        except OverflowError:
            raise TypeError(f"integer {n} is outside the float64 range of a JS number") from None
        out += _F64.pack(0xCB, f)


def _utf8_like_msgpackr(s: str) -> bytes:
    if s.isascii():
        return s.encode()
    if not _SURROGATE_RE.search(s):
        return s.encode()
    # Python strs decoded with surrogatepass may hold a pair as two code points: re-join them.
    s = s.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    units = len(s) + sum(1 for c in s if ord(c) > 0xFFFF)
    if units < _SHORT_STRING_UNITS:
        return s.encode("utf-8", "surrogatepass")  # lone surrogates as 3-byte sequences
    return _SURROGATE_RE.sub("\ufffd", s).encode()


def _pack_str(s: str, out: bytearray) -> None:
    data = _utf8_like_msgpackr(s)
    n = len(data)
    if n < 0x20:
        out.append(0xA0 | n)
    elif n < 0x100:
        out.append(0xD9)
        out.append(n)
    elif n < 0x10000:
        out += _U16.pack(0xDA, n)
    else:
        out += _U32.pack(0xDB, n)
    out += data


def _pack_array_header(n: int, out: bytearray) -> None:
    if n < 0x10:
        out.append(0x90 | n)
    elif n < 0x10000:
        out += _U16.pack(0xDC, n)
    else:
        out += _U32.pack(0xDD, n)


def _is_array_index(key: str) -> bool:
    return bool(_INDEX_RE.match(key)) and (len(key) < 10 or int(key) < _ARRAY_INDEX_END)


def _pack_map(m: Mapping[Any, Any], out: bytearray) -> None:
    n = len(m)
    if n < 0x10000:
        out += _U16.pack(0xDE, n)
    else:
        out += _U32.pack(0xDF, n)
    items = [(k if type(k) is str else _key_string(k), v) for k, v in m.items()]
    index = [kv for kv in items if kv[0][:1].isdigit() and _is_array_index(kv[0])]
    if index:
        index.sort(key=lambda kv: int(kv[0]))
        index_keys = {k for k, _ in index}
        items = index + [kv for kv in items if kv[0] not in index_keys]
    for k, v in items:
        _pack_str(k, out)
        _pack(v, out)


def _key_string(k: Any) -> str:
    """A non-string key as JavaScript would name the property."""
    if isinstance(k, bool):
        return "true" if k else "false"
    if isinstance(k, int):
        return str(k)
    if isinstance(k, str):
        return str(k)
    raise TypeError(f"cannot encode a {type(k).__name__} map key as client MsgPack")


__all__ = ["encode_js"]
