"""Value semantics shared by filters, sorts and aggregates.

Record values are what MsgPack decodes to: ``None``, ``bool``, ``int``, ``float``, ``str``,
``bytes``, ``list`` and ``dict``. The rules follow the TopGun server (HEAD
``predicate.rs``):

* numbers are ``int`` or ``float`` but never ``bool``, and compare with each other
  numerically;
* equality is numeric across int/float, exact for strings, booleans and ``None``, and
  structural (with the same rules, element by element) for lists, maps and bytes; values of
  different kinds are never equal (``True != 1``, ``"1" != 1``);
* ordered comparison is defined only between two numbers or two strings (strings by code
  point); anything else is incomparable, and an incomparable pair never matches ``gt``,
  ``gte``, ``lt``, ``lte`` or ``between``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

MISSING: Final = object()
"""Sentinel returned by path lookups when a field is absent."""


def is_number(value: object) -> bool:
    """True for ``int`` and ``float`` values other than booleans."""
    t = type(value)
    return (
        t is int or t is float or (isinstance(value, int | float) and not isinstance(value, bool))
    )


def values_equal(a: Any, b: Any) -> bool:
    """TopGun equality: numeric across int/float, structural for containers, kinds never mix."""
    ta = type(a)
    tb = type(b)
    if ta is tb and (ta is str or ta is int or ta is float or ta is bool):
        return bool(a == b)
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return bool(a == b)
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        if len(a) != len(b):
            return False
        return all(k in b and values_equal(v, b[k]) for k, v in a.items())
    if isinstance(a, bytes | bytearray) and isinstance(b, bytes | bytearray):
        return bytes(a) == bytes(b)
    return False


def compare_ordered(a: Any, b: Any) -> int | None:
    """-1/0/1 for two numbers or two strings; ``None`` when the pair is incomparable (or NaN)."""
    if is_number(a) and is_number(b):
        if a < b:
            return -1
        if a > b:
            return 1
        if a == b:
            return 0
        return None  # NaN
    if isinstance(a, str) and isinstance(b, str):
        return -1 if a < b else (1 if a > b else 0)
    return None


def split_path(path: str) -> tuple[str, ...]:
    """``"address.city"`` → ``("address", "city")``."""
    return tuple(path.split("."))


def get_path(value: Any, segments: Sequence[str]) -> Any:
    """Walk ``segments`` through nested maps; :data:`MISSING` when any step is absent."""
    current = value
    for segment in segments:
        if not isinstance(current, dict):
            return MISSING
        current = current.get(segment, MISSING)
        if current is MISSING:
            return MISSING
    return current
