"""Pub/sub topic requests (PROTOCOL.md section 7)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from libs.wire.errors import BadFrame
from libs.wire.fields import (
    payload,
    req_str,
)

MAX_TOPIC_LENGTH = 256
_TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:/")


@dataclass(frozen=True, slots=True)
class TopicSub:
    topic: str


@dataclass(frozen=True, slots=True)
class TopicUnsub:
    topic: str


@dataclass(frozen=True, slots=True)
class TopicPub:
    topic: str
    data: Any


def _topic(body: Mapping[Any, Any]) -> str:
    topic = req_str(body, "topic", "payload.topic")
    if not 0 < len(topic) <= MAX_TOPIC_LENGTH or not _TOPIC_CHARS.issuperset(topic):
        raise BadFrame(
            f"payload.topic {topic[:40]!r} is not a valid topic name: use 1-256 ASCII "
            "letters, digits and _ - . : /"
        )
    return topic


def parse_topic_sub(msg: Mapping[Any, Any]) -> TopicSub:
    return TopicSub(_topic(payload(msg)))


def parse_topic_unsub(msg: Mapping[Any, Any]) -> TopicUnsub:
    return TopicUnsub(_topic(payload(msg)))


def parse_topic_pub(msg: Mapping[Any, Any]) -> TopicPub:
    body = payload(msg)
    return TopicPub(_topic(body), body.get("data"))


__all__ = [
    "MAX_TOPIC_LENGTH",
    "TopicPub",
    "TopicSub",
    "TopicUnsub",
    "parse_topic_pub",
    "parse_topic_sub",
    "parse_topic_unsub",
]
