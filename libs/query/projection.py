"""Field projection: keep only the listed top-level fields of a record value."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def project(value: Any, fields: Sequence[str] | None) -> Any:
    """``value`` with only ``fields`` kept (in ``fields`` order); ``None`` keeps everything.

    Values that are not maps pass through unchanged, as at HEAD; a field the record lacks is
    simply absent from the result, and an empty ``fields`` gives an empty map.
    """
    if fields is None or not isinstance(value, dict):
        return value
    return {name: value[name] for name in fields if name in value}
