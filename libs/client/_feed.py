"""Delivery from the connection to application code: bounded, never blocking the reader.

The socket reader must never wait on application code (it would stall every other
subscription and the heartbeat), so each consumer gets one of two bounded shapes:

* :class:`Feed` — a queue of discrete items (topic messages, ENTER/UPDATE/LEAVE changes). When a
  consumer falls ``maxsize`` items behind, the feed fails with :class:`SubscriptionOverflow`
  instead of buffering without limit; the consumer sees the error on its next read.
* :class:`Latest` — a coalescing "something changed" signal for snapshots: a slow consumer just
  skips intermediate snapshots and reads the newest one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Feed", "Latest", "SubscriptionClosed", "SubscriptionOverflow"]


class SubscriptionOverflow(RuntimeError):
    """The consumer fell too far behind; the subscription was closed rather than buffer more."""


class SubscriptionClosed(RuntimeError):
    """The subscription was closed while a read was waiting."""


class Feed(Generic[T]):
    """A bounded queue with one consumer; an async iterator that ends when the feed closes."""

    def __init__(self, maxsize: int = 10_000, what: str = "subscription") -> None:
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._what = what
        self._waiter = asyncio.Event()
        self._closed = False
        self._error: BaseException | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: T) -> bool:
        """Append ``item``; on overflow fail the feed and return False."""
        if self._closed:
            return False
        if len(self._items) >= self._maxsize:
            self.close(
                SubscriptionOverflow(
                    f"{self._what}: the consumer is {self._maxsize} items behind; closed"
                )
            )
            return False
        self._items.append(item)
        self._waiter.set()
        return True

    def close(self, error: BaseException | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        self._error = error
        if error is not None:
            self._items.clear()
        self._waiter.set()

    def get_nowait(self) -> T | None:
        return self._items.popleft() if self._items else None

    async def get(self, timeout: float | None = None) -> T:
        """The next item; raises the failure, or :class:`StopAsyncIteration` once closed."""
        while not self._items:
            if self._closed:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._waiter.clear()
            if timeout is None:
                await self._waiter.wait()
            else:
                await asyncio.wait_for(self._waiter.wait(), timeout)
        return self._items.popleft()

    def __aiter__(self) -> Feed[T]:
        return self

    async def __anext__(self) -> T:
        return await self.get()


class Latest(Generic[T]):
    """The newest version of a value, read by consumers that each keep their own position."""

    def __init__(self, initial: Callable[[], T]) -> None:
        self._make = initial
        self.version = 0
        self._changed = asyncio.Event()
        self._closed = False
        self._error: BaseException | None = None

    def bump(self) -> None:
        self.version += 1
        self._changed.set()

    def close(self, error: BaseException | None = None) -> None:
        self._closed = True
        self._error = error
        self._changed.set()

    @property
    def closed(self) -> bool:
        return self._closed

    async def next_after(self, seen: int, timeout: float | None = None) -> tuple[int, T]:
        """The value once its version is past ``seen``; raises StopAsyncIteration once closed."""
        while self.version <= seen:
            if self._closed:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._changed.clear()
            if timeout is None:
                await self._changed.wait()
            else:
                await asyncio.wait_for(self._changed.wait(), timeout)
        return self.version, self._make()
