"""The group-commit writer: one task drains everything queued since its last commit, writes it
in one backend transaction, then wakes the PERSISTED waiters whose changes are now durable.

``submit`` is synchronous and cheap (the Apply path calls it right after the merge); APPLIED
acks never wait for it. With ``linger_s`` the writer holds a commit that nobody waits for that
long, so that a trickle of small writes shares transactions and syncs; a PERSISTED waiter (or
``flush``/``close``) ends the wait at once.

Marks count submissions: ``wait_durable(mark)`` returns once every submission up to ``mark`` is
committed. A backlog above ``max_pending`` changes makes ``reserve`` wait, which slows Apply
down instead of growing memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time

from services.storage.backends import Backend, WriteBatch
from services.storage.changes import ChangeSet

log = logging.getLogger(__name__)

RETRY_MIN_S = 0.05
RETRY_MAX_S = 2.0


class GroupCommitWriter:
    def __init__(
        self, backend: Backend, *, max_pending: int = 200_000, linger_s: float = 0.0
    ) -> None:
        self._backend = backend
        self._max_pending = max_pending
        self._linger_s = max(0.0, linger_s)
        self._urgent = asyncio.Event()
        self._maps: list[tuple[str, int]] = []
        self._changes: list[ChangeSet] = []
        self._counters: dict[str, bytes] = {}
        self._pending = 0
        self._submitted = 0  # mark of the last submission
        self._durable = 0  # every submission up to this mark is committed
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._tie = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closing = False
        self.committed = asyncio.Event()  # set after every commit (compaction watches it)
        self.commits = 0
        self.last_commit_s = 0.0

    # --- the Apply side -----------------------------------------------------------------------

    @property
    def submitted(self) -> int:
        return self._submitted

    @property
    def durable(self) -> int:
        return self._durable

    def submit(
        self,
        changes: ChangeSet | None = None,
        *,
        maps: list[tuple[str, int]] | None = None,
        counters: dict[str, bytes] | None = None,
    ) -> int:
        """Queue changes for the next commit; returns their mark."""
        if maps:
            self._maps.extend(maps)
        if changes is not None and len(changes):
            self._changes.append(changes)
            self._pending += len(changes)
        if counters:
            self._counters.update(counters)
        if not (maps or counters or (changes is not None and len(changes))):
            return self._submitted
        self._submitted += 1
        if self._pending >= self._max_pending:
            self._room.clear()
        self._wake.set()
        return self._submitted

    async def reserve(self) -> None:
        """Wait while the backlog is over its limit."""
        if not self._room.is_set():
            await self._room.wait()

    async def wait_durable(self, mark: int, timeout: float) -> bool:
        """True once everything up to ``mark`` is committed; False if ``timeout`` ran out."""
        if mark <= self._durable:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tie += 1
        heapq.heappush(self._waiters, (mark, self._tie, fut))
        self._urgent.set()
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            return False
        return True

    # --- the writer task ----------------------------------------------------------------------

    async def run(self) -> None:
        """Commit until ``close``; then commit what is left and return."""
        delay = RETRY_MIN_S
        while True:
            if not (self._changes or self._maps or self._counters):
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._linger_s and not self._waiters and not self._closing and self._room.is_set():
                self._urgent.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._linger_s):
                        await self._urgent.wait()
            batch = WriteBatch(self._maps, self._changes, list(self._counters.items()))
            mark = self._submitted
            self._maps, self._changes, self._counters = [], [], {}
            self._pending = 0
            self._room.set()
            t0 = time.perf_counter()
            try:
                await self._backend.write(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("commit of %d changes failed; retrying in %.2fs", len(batch), delay)
                # Put the batch back in front of whatever arrived meanwhile, in order.
                self._maps[:0] = batch.maps
                self._changes[:0] = batch.changes
                self._counters = {**dict(batch.counters), **self._counters}
                self._pending += sum(len(c) for c in batch.changes)
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX_S, delay * 2)
                continue
            delay = RETRY_MIN_S
            self.commits += 1
            self.last_commit_s = time.perf_counter() - t0
            self._durable = mark
            self.committed.set()
            waiters = self._waiters
            while waiters and waiters[0][0] <= mark:
                fut = heapq.heappop(waiters)[2]
                if not fut.done():
                    fut.set_result(None)

    def close(self) -> None:
        """Ask ``run`` to commit what is queued and return."""
        self._closing = True
        self._wake.set()
        self._urgent.set()

    async def flush(self, timeout: float) -> bool:
        """Wait until everything submitted so far is committed."""
        with contextlib.suppress(TimeoutError):
            return await self.wait_durable(self._submitted, timeout)
        return False
