"""Identity of record values inside the DAG: the missing marker and kind-aware hash keys.

Record values are what MsgPack decodes to. Two values are the same group, join key or distinct
value when TopGun's equality says so: numbers compare across int/float, but a boolean is never a
number and a string never equals a number (``True``, ``1`` and ``"1"`` are three values).
"""

from __future__ import annotations

from typing import Any, Final

import msgpack


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""A field that is absent from a record (distinct from an explicit ``None``)."""

_NONE_KEY = (0, None)


def hash_key(value: Any) -> tuple[int, Any]:
    """A hashable key equal for two values exactly when TopGun equality holds for scalars.

    Raises ``TypeError`` for lists and maps; :func:`deep_key` covers those.
    """
    t = type(value)
    if t is str:
        return (3, value)
    if t is int or t is float:
        return (2, value)
    if t is bool:
        return (1, value)
    if value is None:
        return _NONE_KEY
    if t is bytes:
        return (4, value)
    if isinstance(value, bool):
        return (1, bool(value))
    if isinstance(value, int | float):
        return (2, value)
    if isinstance(value, str):
        return (3, str(value))
    raise TypeError(f"unhashable record value of type {t.__name__}")


def deep_key(value: Any) -> tuple[int, Any]:
    """Like :func:`hash_key`, and also for lists and maps (by their canonical MsgPack bytes)."""
    try:
        return hash_key(value)
    except TypeError:
        return (5, msgpack.packb(_canonical(value), use_bin_type=True))


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return sorted(((str(k), _canonical(v)) for k, v in value.items()), key=lambda kv: kv[0])
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if type(value) is float and value.is_integer():
        return int(value)
    return value
