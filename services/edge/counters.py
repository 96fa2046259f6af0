"""PN counters: COUNTER_REQUEST -> COUNTER_RESPONSE, COUNTER_SYNC -> COUNTER_UPDATE (PROTOCOL.md
10.1), kept by the storage node that owns the counter name's partition.

The TypeScript client sends and reads the state as ``{positive, negative}`` while TopGun's schema
says ``{p, n}``; the edge accepts either and always sends both (section 15.1). A merge is
answered to the sender at once; the owner fans the merged state out to every edge, which passes it
to its other subscribers of the counter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from libs.crdt import partition_of
from libs.storage_client import CounterSnapshot
from libs.wire import BadFrame, encode
from services.edge.dispatch import Message, payload_of, str_field
from topgun_rpc import storage_pb2

if TYPE_CHECKING:
    from services.edge.broadcasts import BroadcastFeeds
    from services.edge.edge import Edge
    from services.edge.session import Session


def state_payload(positive: Mapping[str, float], negative: Mapping[str, float]) -> dict[str, Any]:
    p = {k: _num(v) for k, v in positive.items()}
    n = {k: _num(v) for k, v in negative.items()}
    return {"p": p, "n": n, "positive": p, "negative": n}


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() else v


def parse_state(raw: Any) -> tuple[dict[str, float], dict[str, float]]:
    if type(raw) is not dict:
        raise BadFrame("COUNTER_SYNC: 'state' must be a map {positive, negative}")
    pos = raw.get("positive", raw.get("p", {}))
    neg = raw.get("negative", raw.get("n", {}))
    return _side(pos, "positive"), _side(neg, "negative")


def _side(raw: Any, name: str) -> dict[str, float]:
    if raw is None:
        return {}
    if type(raw) is not dict:
        raise BadFrame(f"COUNTER_SYNC: state.{name} must be a map nodeId -> number")
    out = {}
    for k, v in raw.items():
        if type(k) is not str or type(v) not in (int, float) or not math.isfinite(v) or v < 0:
            raise BadFrame(f"COUNTER_SYNC: state.{name} must map node ids to non-negative numbers")
        out[k] = float(v)
    return out


class Counters:
    def __init__(self, edge: Edge, feeds: BroadcastFeeds) -> None:
        self.edge = edge
        self.subscribers: dict[str, set[Session]] = {}
        feeds.on_counter(self._deliver)

    def _owner(self, name: str) -> Any:
        router = self.edge.router
        return router.client_of(router.table.owner(partition_of(name)))

    def _subscribe(self, session: Session, name: str) -> None:
        mine: set[str] | None = session.state.get("counters")
        if mine is None:
            mine = session.state["counters"] = set()
            session.on_close(lambda: self._drop_session(session))
        if name not in mine:
            mine.add(name)
            self.subscribers.setdefault(name, set()).add(session)

    async def on_request(self, session: Session, msg: Message) -> None:
        name = str_field(payload_of(msg), "name", "COUNTER_REQUEST")
        self._subscribe(session, name)
        snap: CounterSnapshot = await self._owner(name).counter_get(name)
        await session.send(
            {
                "type": "COUNTER_RESPONSE",
                "payload": {"name": name, "state": state_payload(snap.positive, snap.negative)},
            }
        )

    async def on_sync(self, session: Session, msg: Message) -> None:
        body = payload_of(msg)
        name = str_field(body, "name", "COUNTER_SYNC")
        positive, negative = parse_state(body.get("state"))
        self._subscribe(session, name)
        snap: CounterSnapshot = await self._owner(name).counter_merge(
            name, positive, negative, origin=session.origin
        )
        await session.send(
            {
                "type": "COUNTER_UPDATE",
                "payload": {"name": name, "state": state_payload(snap.positive, snap.negative)},
            }
        )

    def _deliver(self, state: storage_pb2.CounterState) -> None:
        subs = self.subscribers.get(state.name)
        if not subs:
            return
        frame = encode(
            {
                "type": "COUNTER_UPDATE",
                "payload": {
                    "name": state.name,
                    "state": state_payload(state.positive, state.negative),
                },
            }
        )
        for s in list(subs):
            if s.origin != state.origin:
                s.send_live(frame)

    def _drop_session(self, session: Session) -> None:
        for name in session.state.get("counters", ()):
            subs = self.subscribers.get(name)
            if subs is not None:
                subs.discard(session)
                if not subs:
                    del self.subscribers[name]


def install(edge: Edge) -> None:
    counters = Counters(edge, edge.features["broadcasts"])
    edge.features["counters"] = counters
    edge.dispatcher.add("COUNTER_REQUEST", counters.on_request)
    edge.dispatcher.add("COUNTER_SYNC", counters.on_sync)
