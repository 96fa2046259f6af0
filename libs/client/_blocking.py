"""The blocking facade: the same client for scripts, notebooks and threads.

``topgun.connect(url)`` starts an event loop on a background thread, opens a
:class:`~libs.client.TopGunClient` on it and returns a :class:`BlockingClient` whose methods
block until the loop has done the work. Every call is marshalled onto the loop thread, so the
replica is only ever touched by one thread; live queries and subscriptions become ordinary
iterators.

    client = topgun.connect("ws://127.0.0.1:8080/ws")
    todos = client.lww_map("todos")
    todos.set("t1", {"title": "milk"})
    todos.flush()
    print(client.query_once("todos").rows)
    client.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from libs.client._client import ClientOptions, TopGunClient
from libs.client._connection import Status, TokenProvider
from libs.client._counters import Counter
from libs.client._feed import Feed
from libs.client._maps import LwwMapHandle, OrMapHandle, WriteOp
from libs.client._protocol import PartitionMap, SearchHit
from libs.client._queries import LiveQuery, QueryChange, QueryResult
from libs.client._search import LiveSearch, SearchChange
from libs.client._topics import Message, Subscription

T = TypeVar("T")

__all__ = ["BlockingClient", "connect"]


class _LoopThread:
    """An event loop running on a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="topgun-loop", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if threading.current_thread() is self._thread:
            raise RuntimeError("blocking call made from the client's own event loop thread")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async def _call() -> T:
            return fn(*args, **kwargs)

        return self.run(_call())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


def _iterate(lt: _LoopThread, step: Callable[[], Awaitable[T]]) -> Iterator[T]:
    async def one() -> T:
        return await step()

    while True:
        try:
            yield lt.run(one())
        except StopAsyncIteration:
            return


class BlockingLwwMap:
    """A blocking view of :class:`~libs.client.LwwMapHandle`."""

    def __init__(self, lt: _LoopThread, handle: LwwMapHandle) -> None:
        self._lt = lt
        self._h = handle
        self.name = handle.name

    def get(self, key: str, default: Any = None) -> Any:
        return self._lt.call(self._h.get, key, default)

    def items(self) -> list[tuple[str, Any]]:
        return self._lt.call(self._h.items)

    def keys(self) -> list[str]:
        return self._lt.call(self._h.keys)

    def to_dict(self) -> dict[str, Any]:
        return self._lt.call(self._h.to_dict)

    def __len__(self) -> int:
        return self._lt.call(len, self._h)

    def __contains__(self, key: str) -> bool:
        return self._lt.call(self._h.__contains__, key)

    def set(self, key: str, value: Any, *, ttl_ms: int | None = None) -> WriteOp:
        return self._lt.call(self._h.set, key, value, ttl_ms=ttl_ms)

    def remove(self, key: str) -> WriteOp:
        return self._lt.call(self._h.remove, key)

    def flush(self, timeout: float | None = 30.0) -> str | None:
        return self._lt.run(self._h.flush(timeout))

    @property
    def root_hash(self) -> int:
        return self._lt.call(lambda: self._h.root_hash)


class BlockingOrMap:
    """A blocking view of :class:`~libs.client.OrMapHandle`."""

    def __init__(self, lt: _LoopThread, handle: OrMapHandle) -> None:
        self._lt = lt
        self._h = handle
        self.name = handle.name

    def get(self, key: str) -> list[Any]:
        return self._lt.call(self._h.get, key)

    def items(self) -> list[tuple[str, list[Any]]]:
        return self._lt.call(self._h.items)

    def __len__(self) -> int:
        return self._lt.call(len, self._h)

    def add(self, key: str, value: Any, *, ttl_ms: int | None = None) -> WriteOp:
        return self._lt.call(self._h.add, key, value, ttl_ms=ttl_ms)

    def remove_value(self, key: str, value: Any) -> list[WriteOp]:
        return self._lt.call(self._h.remove_value, key, value)

    def remove(self, key: str) -> list[WriteOp]:
        return self._lt.call(self._h.remove, key)

    def flush(self, timeout: float | None = 30.0) -> str | None:
        return self._lt.run(self._h.flush(timeout))

    @property
    def root_hash(self) -> int:
        return self._lt.call(lambda: self._h.root_hash)


class BlockingQuery:
    """A live query: iterate for snapshots; :meth:`changes` iterates ENTER/UPDATE/LEAVE."""

    def __init__(self, lt: _LoopThread, q: LiveQuery) -> None:
        self._lt = lt
        self._q = q

    @property
    def result(self) -> QueryResult:
        return self._lt.call(lambda: self._q.result)

    def ready(self, timeout: float = 10.0) -> QueryResult:
        return self._lt.run(self._q.ready(timeout))

    def next(self, timeout: float | None = None) -> QueryResult:
        return self._lt.run(self._q.next(timeout))

    def __iter__(self) -> Iterator[QueryResult]:
        return _iterate(self._lt, self._q.__anext__)

    def changes(self) -> Iterator[QueryChange]:
        feed: Feed[QueryChange] = self._lt.call(self._q.changes)
        return _iterate(self._lt, feed.get)

    def close(self) -> None:
        self._lt.call(self._q.close)

    def __enter__(self) -> BlockingQuery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlockingSubscription:
    """A topic subscription as an iterator of :class:`~libs.client.Message`."""

    def __init__(self, lt: _LoopThread, sub: Subscription) -> None:
        self._lt = lt
        self._sub = sub
        self.topic = sub.topic

    def get(self, timeout: float | None = None) -> Message:
        return self._lt.run(self._sub.get(timeout))

    def __iter__(self) -> Iterator[Message]:
        return _iterate(self._lt, self._sub.__anext__)

    def close(self) -> None:
        self._lt.call(self._sub.close)

    def __enter__(self) -> BlockingSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlockingCounter:
    """A PN counter."""

    def __init__(self, lt: _LoopThread, c: Counter) -> None:
        self._lt = lt
        self._c = c
        self.name = c.name

    @property
    def value(self) -> int | float:
        return self._lt.call(lambda: self._c.value)

    def increment(self, by: int | float = 1) -> int | float:
        return self._lt.call(self._c.increment, by)

    def decrement(self, by: int | float = 1) -> int | float:
        return self._lt.call(self._c.decrement, by)

    def wait_synced(self, timeout: float = 10.0) -> int | float:
        return self._lt.run(self._c.wait_synced(timeout))


class BlockingLiveSearch:
    """A live search: iterate for snapshots of hits; :meth:`changes` for ENTER/UPDATE/LEAVE."""

    def __init__(self, lt: _LoopThread, s: LiveSearch) -> None:
        self._lt = lt
        self._s = s

    @property
    def hits(self) -> list[SearchHit]:
        return self._lt.call(lambda: self._s.hits)

    def ready(self, timeout: float = 10.0) -> list[SearchHit]:
        return self._lt.run(self._s.ready(timeout))

    def __iter__(self) -> Iterator[list[SearchHit]]:
        return _iterate(self._lt, self._s.__anext__)

    def changes(self) -> Iterator[SearchChange]:
        feed: Feed[SearchChange] = self._lt.call(self._s.changes)
        return _iterate(self._lt, feed.get)

    def close(self) -> None:
        self._lt.call(self._s.close)


class BlockingClient:
    """:class:`~libs.client.TopGunClient` with blocking methods (see :func:`connect`)."""

    def __init__(self, client: TopGunClient, lt: _LoopThread) -> None:
        self._client = client
        self._lt = lt
        self._closed = False

    @property
    def status(self) -> Status:
        return self._client.status

    @property
    def node_id(self) -> str:
        return self._client.node_id

    @property
    def pending_ops(self) -> int:
        return self._lt.call(lambda: self._client.pending_ops)

    @property
    def async_client(self) -> TopGunClient:
        """The underlying asyncio client (use it only from the loop thread)."""
        return self._client

    def wait_ready(self, timeout: float | None = 30.0) -> None:
        self._lt.run(self._client.wait_ready(timeout))

    def set_token(self, token: str | None) -> None:
        self._lt.call(self._client.set_token, token)

    def lww_map(self, name: str) -> BlockingLwwMap:
        return BlockingLwwMap(self._lt, self._lt.call(self._client.lww_map, name))

    def or_map(self, name: str) -> BlockingOrMap:
        return BlockingOrMap(self._lt, self._lt.call(self._client.or_map, name))

    def wait_synced(self, name: str, timeout: float | None = 30.0) -> None:
        self._lt.run(self._client.wait_synced(name, timeout))

    def wait_acked(self, op: WriteOp | int, timeout: float | None = 30.0) -> str:
        return self._lt.run(self._client.wait_acked(op, timeout))

    def flush(self, timeout: float | None = 30.0) -> None:
        self._lt.run(self._client.flush(timeout))

    def query(
        self,
        map_name: str,
        *,
        where: Mapping[str, Any] | None = None,
        predicate: Mapping[str, Any] | None = None,
        sort: Any = None,
        limit: int | None = None,
        fields: Sequence[str] | None = None,
    ) -> BlockingQuery:
        q = self._lt.call(
            self._client.query,
            map_name,
            where=where,
            predicate=predicate,
            sort=sort,
            limit=limit,
            fields=fields,
        )
        return BlockingQuery(self._lt, q)

    def query_once(
        self,
        map_name: str,
        *,
        where: Mapping[str, Any] | None = None,
        predicate: Mapping[str, Any] | None = None,
        sort: Any = None,
        limit: int | None = None,
        fields: Sequence[str] | None = None,
        timeout: float = 10.0,
    ) -> QueryResult:
        return self._lt.run(
            self._client.query_once(
                map_name,
                where=where,
                predicate=predicate,
                sort=sort,
                limit=limit,
                fields=fields,
                timeout=timeout,
            )
        )

    def publish(self, topic: str, data: Any) -> None:
        self._lt.run(self._client.publish(topic, data))

    def subscribe(self, topic: str) -> BlockingSubscription:
        return BlockingSubscription(self._lt, self._lt.call(self._client.subscribe, topic))

    def counter(self, name: str) -> BlockingCounter:
        return BlockingCounter(self._lt, self._lt.call(self._client.counter, name))

    def search(
        self,
        map_name: str,
        query: str,
        *,
        limit: int | None = None,
        min_score: float | None = None,
        boost: Mapping[str, float] | None = None,
        timeout: float = 10.0,
    ) -> list[SearchHit]:
        return self._lt.run(
            self._client.search(
                map_name, query, limit=limit, min_score=min_score, boost=boost, timeout=timeout
            )
        )

    def search_subscribe(
        self,
        map_name: str,
        query: str,
        *,
        limit: int | None = None,
        min_score: float | None = None,
        boost: Mapping[str, float] | None = None,
    ) -> BlockingLiveSearch:
        s = self._lt.call(
            self._client.search_subscribe,
            map_name,
            query,
            limit=limit,
            min_score=min_score,
            boost=boost,
        )
        return BlockingLiveSearch(self._lt, s)

    def partition_map(self, timeout: float = 10.0) -> PartitionMap:
        return self._lt.run(self._client.partition_map(timeout))

    def close(self) -> None:
        """Close the client and stop its thread. Pending writes stay in the store."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._lt.run(self._client.close(), 30)
        self._lt.stop()

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(
    url: str,
    token: str | None = None,
    *,
    token_provider: TokenProvider | None = None,
    store: str | Path = ":memory:",
    write_concern: str | None = None,
    options: ClientOptions | None = None,
    wait: float | None = 10.0,
) -> BlockingClient:
    """Open a client with blocking methods, its event loop on a background thread.

    Waits up to ``wait`` seconds for the client to be ``READY``, then returns either way: the
    client works offline and syncs once the server is reachable (check ``client.status``).
    """
    lt = _LoopThread()
    client = TopGunClient(
        url,
        token,
        token_provider=token_provider,
        store=store,
        write_concern=write_concern,
        options=options,
    )
    try:
        lt.run(client.open())
    except BaseException:
        lt.stop()
        raise
    bc = BlockingClient(client, lt)
    if wait:
        with contextlib.suppress(TimeoutError):
            lt.run(client.wait_ready(wait))
    return bc
