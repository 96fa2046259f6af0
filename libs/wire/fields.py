"""Readers for the fields of a decoded client message.

Each reader returns the field in its Python type or raises ``BadFrame`` naming the field and
what was expected. Numbers follow the client's encoding: msgpackr writes every number that does
not fit 32 bits as float64, so an integral float is accepted wherever an integer is meant and
comes back as ``int``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from libs.crdt.hlc import Timestamp
from libs.wire.errors import BadFrame

MAX_SAFE_INTEGER = 2**53
_MAX_SAFE_FLOAT = float(MAX_SAFE_INTEGER)
_tuple_new = tuple.__new__

Message = Mapping[Any, Any]


def kind_of(value: Any) -> str:
    """The wire name of a decoded value's type, for error messages."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes | bytearray):
        return "bin"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "map"
    return type(value).__name__


def bad(field: str, expected: str, value: Any) -> BadFrame:
    """A ``BadFrame`` saying ``field`` must be ``expected`` and what it was."""
    return BadFrame(f"{field} must be {expected}, got {kind_of(value)}")


def prefixed(prefix: str, err: BadFrame) -> BadFrame:
    """``err`` with its field path placed under ``prefix`` (``payload.ops[3]``)."""
    return BadFrame(f"{prefix}.{err.message}", code=err.code)


def to_int(value: Any, field: str) -> int:
    """An integer field; integral floats below 2**53 are accepted (bools are not)."""
    t = type(value)
    if t is int:
        return int(value)
    if t is float:
        if value.is_integer() and -MAX_SAFE_INTEGER < value < MAX_SAFE_INTEGER:
            return int(value)
        raise BadFrame(f"{field} must be an integer, got {value!r}")
    raise bad(field, "an integer", value)


def to_number(value: Any, field: str) -> int | float:
    """A finite number; integral floats below 2**53 become ``int``."""
    t = type(value)
    if t is int:
        return int(value)
    if t is float:
        if not math.isfinite(value):
            raise BadFrame(f"{field} must be a finite number, got {value!r}")
        if value.is_integer() and -MAX_SAFE_INTEGER < value < MAX_SAFE_INTEGER:
            return int(value)
        return float(value)
    raise bad(field, "a number", value)


def req_map(msg: Message, name: str, field: str | None = None) -> Mapping[Any, Any]:
    value = msg.get(name)
    if isinstance(value, Mapping):
        return value
    field = field or name
    if value is None and name not in msg:
        raise BadFrame(f"{field} is missing")
    raise bad(field, "a map", value)


def opt_map(msg: Message, name: str, field: str | None = None) -> Mapping[Any, Any] | None:
    value = msg.get(name)
    if value is None or isinstance(value, Mapping):
        return value
    raise bad(field or name, "a map", value)


def req_str(msg: Message, name: str, field: str | None = None) -> str:
    value = msg.get(name)
    if type(value) is str:
        return value
    field = field or name
    if value is None and name not in msg:
        raise BadFrame(f"{field} is missing")
    raise bad(field, "a string", value)


def opt_str(msg: Message, name: str, field: str | None = None) -> str | None:
    value = msg.get(name)
    if value is None or type(value) is str:
        return value
    raise bad(field or name, "a string", value)


def req_int(msg: Message, name: str, field: str | None = None) -> int:
    value = msg.get(name)
    if value is None:
        raise BadFrame(f"{field or name} is missing")
    return to_int(value, field or name)


def opt_int(msg: Message, name: str, field: str | None = None) -> int | None:
    value = msg.get(name)
    if value is None:
        return None
    return to_int(value, field or name)


def opt_number(msg: Message, name: str, field: str | None = None) -> int | float | None:
    value = msg.get(name)
    if value is None:
        return None
    return to_number(value, field or name)


def opt_bool(msg: Message, name: str, field: str | None = None) -> bool | None:
    value = msg.get(name)
    if value is None or type(value) is bool:
        return value
    raise bad(field or name, "a boolean", value)


def opt_str_list(msg: Message, name: str, field: str | None = None) -> tuple[str, ...] | None:
    value = msg.get(name)
    if value is None:
        return None
    field = field or name
    if not isinstance(value, list | tuple):
        raise bad(field, "an array of strings", value)
    for i, item in enumerate(value):
        if type(item) is not str:
            raise bad(f"{field}[{i}]", "a string", item)
    return tuple(value)


def req_str_list(msg: Message, name: str, field: str | None = None) -> tuple[str, ...]:
    value = opt_str_list(msg, name, field)
    if value is None:
        raise BadFrame(f"{field or name} is missing")
    return value


def req_list(msg: Message, name: str, field: str | None = None) -> list[Any]:
    value = msg.get(name)
    if isinstance(value, list):
        return value
    field = field or name
    if value is None and name not in msg:
        raise BadFrame(f"{field} is missing")
    raise bad(field, "an array", value)


def timestamp(value: Any, field: str) -> Timestamp:
    """An HLC timestamp map ``{millis, counter, nodeId}``."""
    if type(value) is dict:
        # The common case, checked inline: float64 or int millis, int counter, str node id.
        millis = value.get("millis")
        counter = value.get("counter")
        node_id = value.get("nodeId")
        if type(millis) is float and 0.0 <= millis < _MAX_SAFE_FLOAT and millis.is_integer():
            millis = int(millis)
        if type(counter) is float and 0.0 <= counter < _MAX_SAFE_FLOAT and counter.is_integer():
            counter = int(counter)
        if (
            type(millis) is int
            and type(counter) is int
            and type(node_id) is str
            and millis >= 0
            and counter >= 0
        ):
            return _tuple_new(Timestamp, (millis, counter, node_id))
    if not isinstance(value, Mapping):
        raise bad(field, "a timestamp map {millis, counter, nodeId}", value)
    try:
        return Timestamp.from_wire(value)
    except ValueError as exc:
        raise BadFrame(f"{field}: {exc}") from None


def number_map(value: Any, field: str) -> dict[str, int | float]:
    """A map of string keys to finite numbers (counter states, bucket hashes, boosts)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise bad(field, "a map of numbers", value)
    out: dict[str, int | float] = {}
    for k, v in value.items():
        if type(k) is not str:
            raise bad(f"{field} key", "a string", k)
        out[k] = to_number(v, f"{field}.{k}")
    return out


def payload(msg: Message) -> Mapping[Any, Any]:
    """The ``payload`` map of a wrapped message."""
    value = msg.get("payload")
    if isinstance(value, Mapping):
        return value
    kind = msg.get("type")
    if value is None and "payload" not in msg:
        raise BadFrame(f"{kind} is a wrapped message: its fields belong in 'payload'")
    raise bad("payload", "a map", value)
