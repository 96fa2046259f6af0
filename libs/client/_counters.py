"""PN counters shared through the server (PROTOCOL.md 10.1).

A counter handle holds a local :class:`~libs.crdt.PNCounter` replica, persisted in the store:
``increment``/``decrement`` change it at once, even offline. On first use and after every
reconnect the client sends ``COUNTER_REQUEST`` (which also subscribes it) and its own state in
``COUNTER_SYNC``; every ``COUNTER_RESPONSE``/``COUNTER_UPDATE`` is merged (per-node maximum).
"""

from __future__ import annotations

import asyncio

from libs.client import _protocol as proto
from libs.client._feed import Latest
from libs.client._oplog import LocalStore
from libs.client._topics import Sender
from libs.crdt import PNCounter

__all__ = ["Counter", "Counters"]


class Counter:
    """One PN counter: ``value`` is read locally; async-iterate for each new value."""

    def __init__(self, owner: Counters, name: str, state: PNCounter) -> None:
        self.name = name
        self._owner = owner
        self._state = state
        self._latest: Latest[int | float] = Latest(lambda: self._state.value)
        self._seen = 0
        self.synced = asyncio.Event()

    @property
    def value(self) -> int | float:
        return self._state.value

    def increment(self, by: int | float = 1) -> int | float:
        return self.add(by)

    def decrement(self, by: int | float = 1) -> int | float:
        return self.add(-by)

    def add(self, delta: int | float) -> int | float:
        """Add ``delta`` (either sign) now; the server hears of it in the background."""
        value = self._state.add_and_get(delta)
        self._owner._changed(self)
        self._latest.bump()
        return value

    def _merge(self, positive: dict[str, float], negative: dict[str, float]) -> None:
        if self._state.merge({"positive": positive, "negative": negative}):
            self._owner._persist(self)
            self._latest.bump()
        self.synced.set()

    async def wait_synced(self, timeout: float = 10.0) -> int | float:
        """Wait for the server's state to have been merged once; the value then."""
        await asyncio.wait_for(self.synced.wait(), timeout)
        return self.value

    def __aiter__(self) -> Counter:
        return self

    async def __anext__(self) -> int | float:
        self._seen, value = await self._latest.next_after(self._seen)
        return value

    async def next(self, timeout: float | None = None) -> int | float:
        self._seen, value = await self._latest.next_after(self._seen, timeout)
        return value


class Counters:
    """The counters one client uses."""

    def __init__(self, sender: Sender, store: LocalStore, node_id: str) -> None:
        self._sender = sender
        self._store = store
        self._node_id = node_id
        self._counters: dict[str, Counter] = {}
        self._dirty: set[str] = set()
        self._flush_scheduled = False

    def get(self, name: str) -> Counter:
        c = self._counters.get(name)
        if c is None:
            state = PNCounter(self._node_id)
            saved = self._store.get_meta(f"counter:{name}")
            if isinstance(saved, dict):
                state.merge(saved)
            c = self._counters[name] = Counter(self, name, state)
            self._sender.send_nowait(proto.counter_request(name))
            self._sender.send_nowait(proto.counter_sync(name, state.to_wire()))
        return c

    def _persist(self, c: Counter) -> None:
        self._store.set_meta(f"counter:{c.name}", c._state.to_wire())

    def _changed(self, c: Counter) -> None:
        self._persist(c)
        self._dirty.add(c.name)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        for name in self._dirty:
            c = self._counters.get(name)
            if c is not None:
                self._sender.send_nowait(proto.counter_sync(name, c._state.to_wire()))
        self._dirty.clear()

    def on_session_ready(self) -> None:
        for name, c in self._counters.items():
            c.synced.clear()
            self._sender.send_nowait(proto.counter_request(name))
            self._sender.send_nowait(proto.counter_sync(name, c._state.to_wire()))

    def on_state(self, msg: proto.CounterState) -> None:
        c = self._counters.get(msg.name)
        if c is not None:
            c._merge(msg.positive, msg.negative)

    def close(self) -> None:
        for c in self._counters.values():
            c._latest.close()
