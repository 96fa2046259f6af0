"""Writes: ``CLIENT_OP`` and ``OP_BATCH`` and the ClientOp they carry (PROTOCOL.md section 4).

The op kind is detected as the HEAD server does (4.1); unknown op fields are ignored, since the
SDK sends whole op-log entries (with ``timestamp`` and ``synced``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from libs.crdt.lww import LwwRecord
from libs.crdt.ormap import OrRecord
from libs.wire.errors import BadFrame
from libs.wire.fields import (
    bad,
    kind_of,
    payload,
    prefixed,
    req_list,
    to_int,
)
from libs.wire.records import (
    lww_record_from_wire,
    or_record_from_wire,
)


class OpKind(StrEnum):
    PUT = "PUT"
    REMOVE = "REMOVE"
    OR_ADD = "OR_ADD"
    OR_REMOVE = "OR_REMOVE"


class WriteConcern(StrEnum):
    FIRE_AND_FORGET = "FIRE_AND_FORGET"
    MEMORY = "MEMORY"
    APPLIED = "APPLIED"
    REPLICATED = "REPLICATED"
    PERSISTED = "PERSISTED"


_WRITE_CONCERNS = {w.value: w for w in WriteConcern}


class ClientOp(NamedTuple):
    """One write. ``kind`` is detected as PROTOCOL.md 4.1 says; ``record`` is set for PUT and for
    a REMOVE that carries a tombstone, ``or_record`` for OR_ADD, ``or_tag`` for OR_REMOVE.

    A named tuple, like libs.crdt's records: the write path builds one per op."""

    id: str | None
    map_name: str
    key: str
    kind: OpKind
    record: LwwRecord | None = None
    or_record: OrRecord | None = None
    or_tag: str | None = None
    write_concern: WriteConcern | None = None
    timeout_ms: int | None = None


@dataclass(frozen=True, slots=True)
class OpBatch:
    ops: tuple[ClientOp, ...]
    write_concern: WriteConcern | None = None
    timeout_ms: int | None = None

    @property
    def last_id(self) -> str | None:
        """The id ``OP_ACK.lastId`` must echo: the last op's (``None`` for an empty batch)."""
        return self.ops[-1].id if self.ops else None


def _write_concern(value: Any, field: str) -> WriteConcern | None:
    if value is None:
        return None
    wc = _WRITE_CONCERNS.get(value) if type(value) is str else None
    if wc is None:
        raise BadFrame(
            f"{field} must be one of {', '.join(_WRITE_CONCERNS)}, got {value!r}"
            if type(value) is str
            else f"{field} must be a write concern string, got {kind_of(value)}"
        )
    return wc


def _timeout(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if type(value) is float and math.isfinite(value):
        value = int(value)  # a fractional millisecond timeout is truncated
    ms = to_int(value, field)
    if ms < 0:
        raise BadFrame(f"{field} must not be negative, got {ms}")
    return ms


def op_from_wire(op: Any) -> ClientOp:
    """One ClientOp map (the element of ``OP_BATCH.payload.ops``, or ``CLIENT_OP.payload``)."""
    if type(op) is not dict and not isinstance(op, Mapping):
        raise bad("op", "a map", op)
    map_name = op.get("mapName")
    if type(map_name) is not str:
        raise _missing_or_bad(op, "mapName", "a string")
    key = op.get("key")
    if type(key) is not str:
        raise _missing_or_bad(op, "key", "a string")
    op_id = op.get("id")
    if op_id is not None and type(op_id) is not str:
        if type(op_id) is int or (type(op_id) is float and op_id.is_integer()):
            op_id = str(int(op_id))
        else:
            raise bad("id", "a string", op_id)
    op_type = op.get("opType")
    record: LwwRecord | None = None
    or_record: OrRecord | None = None
    or_tag: str | None = None
    raw_record = op.get("record", _ABSENT)
    raw_or = op.get("orRecord")
    if op_type == "REMOVE" or raw_record is None:
        kind = OpKind.REMOVE
        if raw_record is not _ABSENT and raw_record is not None:
            record = lww_record_from_wire(raw_record)
    elif raw_or is not None and (type(raw_or) is dict or isinstance(raw_or, Mapping)):
        kind = OpKind.OR_ADD
        or_record = or_record_from_wire(raw_or)
        raw_tag = op.get("orTag")
        if type(raw_tag) is str:
            or_tag = raw_tag
    else:
        raw_tag = op.get("orTag")
        if raw_or is None and type(raw_tag) is str:
            kind = OpKind.OR_REMOVE
            or_tag = raw_tag
        elif raw_record is _ABSENT:
            raise BadFrame("op has none of record (PUT), orRecord (OR_ADD) or orTag (OR_REMOVE)")
        else:
            kind = OpKind.PUT
            record = lww_record_from_wire(raw_record)
    wc = op.get("writeConcern")
    timeout = op.get("timeout")
    return _tuple_new(
        ClientOp,
        (
            op_id,
            map_name,
            key,
            kind,
            record,
            or_record,
            or_tag,
            None if wc is None else _write_concern(wc, "writeConcern"),
            None if timeout is None else _timeout(timeout, "timeout"),
        ),
    )


_ABSENT: Any = object()
_tuple_new = tuple.__new__


def _missing_or_bad(m: Mapping[Any, Any], name: str, expected: str) -> BadFrame:
    if name not in m:
        return BadFrame(f"{name} is missing")
    return bad(name, expected, m[name])


def parse_client_op(msg: Mapping[Any, Any]) -> ClientOp:
    """``CLIENT_OP {payload: ClientOp}``."""
    body = payload(msg)
    try:
        return op_from_wire(body)
    except BadFrame as err:
        raise prefixed("payload", err) from None


def parse_op_batch(msg: Mapping[Any, Any]) -> OpBatch:
    """``OP_BATCH {payload: {ops, writeConcern?, timeout?}}``."""
    body = payload(msg)
    raw_ops = req_list(body, "ops", "payload.ops")
    i = 0
    try:
        ops = []
        for i, raw in enumerate(raw_ops):  # noqa: B007 - i names the failing op
            ops.append(op_from_wire(raw))
    except BadFrame as err:
        raise prefixed(f"payload.ops[{i}]", err) from None
    return OpBatch(
        tuple(ops),
        _write_concern(body.get("writeConcern"), "payload.writeConcern"),
        _timeout(body.get("timeout"), "payload.timeout"),
    )


__all__ = [
    "ClientOp",
    "OpBatch",
    "OpKind",
    "WriteConcern",
    "op_from_wire",
    "parse_client_op",
    "parse_op_batch",
]
