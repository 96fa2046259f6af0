"""Pub/sub topics: publish (queued while offline), subscribe as an async iterator.

A topic is subscribed on the server once, however many local subscriptions it has, and is
subscribed again after every reconnect. Publishes made while offline wait in a bounded queue and
go out, in order, when the next session starts.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from libs.client import _protocol as proto
from libs.client._feed import Feed

log = logging.getLogger("topgun.client")

_TOPIC_RE = re.compile(r"^[A-Za-z0-9_\-.:/]{1,256}$")


class Sender(Protocol):
    @property
    def ready(self) -> bool: ...

    def send_nowait(self, msg: Mapping[str, Any]) -> bool: ...

    async def send(self, msg: Mapping[str, Any]) -> bool: ...


class PublishQueueFull(RuntimeError):
    """Too many publishes are waiting for a connection."""


@dataclass(frozen=True, slots=True)
class Message:
    """One message received on a topic."""

    topic: str
    data: Any
    publisher_id: str | None
    timestamp: int | None


def check_topic(topic: str) -> str:
    if not isinstance(topic, str) or not _TOPIC_RE.match(topic):
        raise ValueError(
            f"invalid topic {topic!r}: 1-256 characters of letters, digits and _ - . : /"
        )
    return topic


class Subscription:
    """Messages of one topic, as an async iterator; close it (or leave its ``async with``) to stop."""

    def __init__(self, topics: Topics, topic: str, maxsize: int) -> None:
        self.topic = topic
        self._topics = topics
        self._feed: Feed[Message] = Feed(maxsize, what=f"topic {topic!r}")

    def _deliver(self, msg: Message) -> None:
        if not self._feed.put(msg):
            self._topics._drop(self)

    async def get(self, timeout: float | None = None) -> Message:
        """The next message (``TimeoutError`` after ``timeout`` seconds)."""
        return await self._feed.get(timeout)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        return await self._feed.get()

    def close(self) -> None:
        self._feed.close()
        self._topics._drop(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class Topics:
    """All topic subscriptions of one client."""

    def __init__(self, sender: Sender, *, offline_queue: int = 10_000, feed_size: int = 10_000):
        self._sender = sender
        self._subs: dict[str, set[Subscription]] = {}
        self._pending: deque[dict[str, Any]] = deque()
        self._offline_limit = offline_queue
        self._feed_size = feed_size

    def subscribe(self, topic: str) -> Subscription:
        check_topic(topic)
        sub = Subscription(self, topic, self._feed_size)
        subs = self._subs.setdefault(topic, set())
        if not subs:
            self._sender.send_nowait(proto.topic_sub(topic))
        subs.add(sub)
        return sub

    def _drop(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.topic)
        if subs is None or sub not in subs:
            return
        subs.discard(sub)
        if not subs:
            del self._subs[sub.topic]
            self._sender.send_nowait(proto.topic_unsub(sub.topic))

    async def publish(self, topic: str, data: Any) -> None:
        """Send ``data`` to the topic's other subscribers; queued while offline."""
        check_topic(topic)
        msg = proto.topic_pub(topic, data)
        if self._sender.ready and not self._pending and await self._sender.send(msg):
            return
        if len(self._pending) >= self._offline_limit:
            raise PublishQueueFull(
                f"{self._offline_limit} publishes are already waiting for a connection"
            )
        self._pending.append(msg)

    @property
    def queued(self) -> int:
        return len(self._pending)

    def on_session_ready(self) -> None:
        for topic in self._subs:
            self._sender.send_nowait(proto.topic_sub(topic))
        while self._pending:
            if not self._sender.send_nowait(self._pending[0]):
                return
            self._pending.popleft()

    def on_message(self, msg: proto.TopicMessage) -> None:
        subs = self._subs.get(msg.topic)
        if not subs:
            return
        m = Message(msg.topic, msg.data, msg.publisher_id, msg.timestamp)
        for sub in list(subs):
            sub._deliver(m)

    def close(self) -> None:
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub._feed.close()
        self._subs.clear()
