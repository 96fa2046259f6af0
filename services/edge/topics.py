"""Pub/sub topics: TOPIC_SUB, TOPIC_UNSUB, TOPIC_PUB -> TOPIC_MESSAGE (PROTOCOL.md 7).

A publish goes to the storage node that owns the topic name's partition, which fans it out to
every edge (``broadcasts.py``); each edge delivers it to its own subscribers of the topic except
the publishing connection. Delivery to local subscribers also goes through that round trip, so
one publisher's messages arrive in publish order on every edge alike.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

import msgpack

from libs.crdt import partition_of
from libs.wire import BadFrame, encode
from services.edge.dispatch import Message, payload_of
from topgun_rpc import storage_pb2

if TYPE_CHECKING:
    from services.edge.broadcasts import BroadcastFeeds
    from services.edge.edge import Edge
    from services.edge.session import Session

TOPIC_NAME = re.compile(r"[A-Za-z0-9_\-.:/]{1,256}")
_pack = msgpack.Packer(use_bin_type=True).pack


def topic_of(body: dict[str, object], where: str) -> str:
    topic = body.get("topic")
    if type(topic) is not str or not TOPIC_NAME.fullmatch(topic):
        raise BadFrame(
            f"{where}: 'topic' must be 1-256 characters of letters, digits and _ - . : /"
        )
    return topic


class Topics:
    def __init__(self, edge: Edge, feeds: BroadcastFeeds) -> None:
        self.edge = edge
        self.subscribers: dict[str, set[Session]] = {}
        feeds.on_topic(self._deliver)

    async def on_sub(self, session: Session, msg: Message) -> None:
        topic = topic_of(payload_of(msg), "TOPIC_SUB")
        mine: set[str] | None = session.state.get("topics")
        if mine is None:
            mine = session.state["topics"] = set()
            session.on_close(lambda: self._drop_session(session))
        if topic not in mine:
            mine.add(topic)
            self.subscribers.setdefault(topic, set()).add(session)

    async def on_unsub(self, session: Session, msg: Message) -> None:
        topic = topic_of(payload_of(msg), "TOPIC_UNSUB")
        mine: set[str] | None = session.state.get("topics")
        if mine and topic in mine:
            mine.discard(topic)
            self._remove(topic, session)

    async def on_pub(self, session: Session, msg: Message) -> None:
        body = payload_of(msg)
        topic = topic_of(body, "TOPIC_PUB")
        data = _pack(body.get("data"))
        fanout = self.edge.features.get("nats_fanout")
        if fanout is not None:  # clustered: every edge hears it on NATS
            await fanout.publish_topic(
                topic, data, publisher_id=session.principal.user_id or "", origin=session.origin
            )
            return
        owner = self.edge.router.table.owner(partition_of(topic))
        await self.edge.router.client_of(owner).publish(
            topic,
            data,
            publisher_id=session.principal.user_id or "",
            origin=session.origin,
            timestamp_ms=int(time.time() * 1000),
        )

    def _deliver(self, msg: storage_pb2.TopicMessage) -> None:
        subs = self.subscribers.get(msg.topic)
        if not subs:
            return
        payload: dict[str, object] = {
            "topic": msg.topic,
            "data": msgpack.unpackb(msg.data, raw=False, strict_map_key=False)
            if msg.data
            else None,
            "timestamp": msg.timestamp_ms,
        }
        if msg.publisher_id:
            payload["publisherId"] = msg.publisher_id
        frame = encode({"type": "TOPIC_MESSAGE", "payload": payload})
        origin = msg.origin
        for s in list(subs):
            if s.origin != origin:
                s.send_live(frame)

    def _remove(self, topic: str, session: Session) -> None:
        subs = self.subscribers.get(topic)
        if subs is not None:
            subs.discard(session)
            if not subs:
                del self.subscribers[topic]

    def _drop_session(self, session: Session) -> None:
        for topic in session.state.get("topics", ()):
            self._remove(topic, session)


def install(edge: Edge) -> None:
    topics = Topics(edge, edge.features["broadcasts"])
    edge.features["topics"] = topics
    edge.dispatcher.add("TOPIC_SUB", topics.on_sub)
    edge.dispatcher.add("TOPIC_UNSUB", topics.on_unsub)
    edge.dispatcher.add("TOPIC_PUB", topics.on_pub)
