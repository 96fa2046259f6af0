"""PN counter requests (PROTOCOL.md 10.1); the state is read in both spellings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from libs.crdt.pncounter import state_from_wire
from libs.wire.errors import BadFrame
from libs.wire.fields import (
    bad,
    payload,
    req_str,
)


@dataclass(frozen=True, slots=True)
class CounterState:
    """A PN counter: per node id, the total of increments (``positive``) and decrements."""

    positive: dict[str, int | float]
    negative: dict[str, int | float]

    @property
    def value(self) -> int | float:
        return sum(self.positive.values()) - sum(self.negative.values())


@dataclass(frozen=True, slots=True)
class CounterRequest:
    name: str


@dataclass(frozen=True, slots=True)
class CounterSync:
    name: str
    state: CounterState


def parse_counter_state(value: Any, field: str = "state") -> CounterState:
    """``{p, n}`` (schema) or ``{positive, negative}`` (what the client sends); when both
    spellings are present, the per-node maximum."""
    if value is None:
        return CounterState({}, {})
    if not isinstance(value, Mapping):
        raise bad(field, "a map {positive, negative}", value)
    try:
        positive, negative = state_from_wire(value)
    except (ValueError, TypeError) as exc:
        raise BadFrame(f"{field}: {exc}") from None
    return CounterState(dict(positive), dict(negative))


def parse_counter_request(msg: Mapping[Any, Any]) -> CounterRequest:
    return CounterRequest(req_str(payload(msg), "name", "payload.name"))


def parse_counter_sync(msg: Mapping[Any, Any]) -> CounterSync:
    body = payload(msg)
    return CounterSync(
        req_str(body, "name", "payload.name"),
        parse_counter_state(body.get("state"), "payload.state"),
    )


__all__ = [
    "CounterRequest",
    "CounterState",
    "CounterSync",
    "parse_counter_request",
    "parse_counter_state",
    "parse_counter_sync",
]
