"""A process's place in the cluster, on top of the coordination store.

- ``MembersView`` follows the membership bucket (a watch, so joins and meta changes arrive at
  once) and answers who is alive now.
- ``ClusterMember`` keeps this process's membership key alive, follows the partition table
  (a watch, plus a poll that catches anything a broken watch missed) and tells its listeners
  about every newer version. It also knows when this process may no longer trust its own view:
  ``fenced`` is true when its last successful heartbeat is older than most of the member TTL
  (the coordinator may already have declared it gone), and stays true after such a gap until a
  heartbeat went through again *and* the current table was reloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace

from libs.cluster.coordination import Coordination, MemberInfo
from libs.cluster.partition_table import NodeId, PartitionTable

log = logging.getLogger(__name__)

FENCE_FRACTION = 0.8  # fence once this share of the member TTL passed without a heartbeat
TABLE_POLL_S = 1.0

TableListener = Callable[[PartitionTable], None]


class MembersView:
    """Every member's latest self-description, kept current by a watch on the bucket."""

    def __init__(self, coord: Coordination) -> None:
        self._coord = coord
        self._entries: dict[str, MemberInfo] = {}
        self.changed = asyncio.Event()
        self.ready = asyncio.Event()

    def alive(self, role: str) -> dict[NodeId, MemberInfo]:
        now = self._coord.now_ms()
        ttl = self._coord.member_ttl
        return {
            m.node_id: m for m in self._entries.values() if m.role == role and m.alive(now, ttl)
        }

    def all(self) -> list[MemberInfo]:
        return list(self._entries.values())

    async def run(self) -> None:
        while True:
            try:
                first = True
                async for key, info in self._coord.watch_members():
                    if info is None:
                        self._entries.pop(key, None)
                    else:
                        self._entries[key] = info
                    self.changed.set()
                    if first:
                        first = False
                        self.ready.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("membership watch failed (%r); restarting it", exc)
            await asyncio.sleep(0.5)


class ClusterMember:
    """Keeps ``info`` registered and follows the partition table."""

    def __init__(
        self,
        coord: Coordination,
        info: MemberInfo,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.coord = coord
        self.info = info
        self.table: PartitionTable | None = None
        self._clock = clock
        self._listeners: list[TableListener] = []
        self._last_ok: float | None = None  # clock() when the last successful heartbeat was sent
        self._stale = True  # a heartbeat gap happened; the table must be reloaded before trust
        self._ok_since: float | None = None  # heartbeats getting through without a break since
        self._beat_now = asyncio.Event()
        self._table_changed = asyncio.Condition()
        self.heartbeats_failed = 0

    # --- what others ask ----------------------------------------------------------------------

    @property
    def node_id(self) -> NodeId:
        return self.info.node_id

    @property
    def fenced(self) -> bool:
        if self._stale or self._last_ok is None:
            return True
        return self._clock() - self._last_ok > self.coord.member_ttl * FENCE_FRACTION

    def healthy_for(self) -> float:
        """Seconds this member's heartbeats have been getting through without a break."""
        if self._ok_since is None or self.fenced:
            return 0.0
        return self._clock() - self._ok_since

    def on_table(self, fn: TableListener) -> None:
        self._listeners.append(fn)
        if self.table is not None:
            fn(self.table)

    def set_meta(self, **values: str) -> None:
        """Change what this member says about itself; published with an immediate heartbeat."""
        meta = {**self.info.meta, **values}
        if meta != self.info.meta:
            self.info = replace(self.info, meta=meta)
            self._beat_now.set()

    async def wait_table(self, version: int, timeout: float) -> bool:
        """True once a table of at least ``version`` was adopted (False after ``timeout``)."""
        if self.table is not None and self.table.version >= version:
            return True
        async with self._table_changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._table_changed.wait_for(
                        lambda: self.table is not None and self.table.version >= version
                    ),
                    timeout,
                )
        return self.table is not None and self.table.version >= version

    # --- running ------------------------------------------------------------------------------

    async def register(self, timeout: float = 60.0) -> None:
        """The first heartbeat and table load, so the member is visible and current at once;
        retried while the store is not ready (a cluster still electing its leaders)."""
        deadline = self._clock() + timeout
        delay = 0.1
        while True:
            try:
                await asyncio.wait_for(self._beat(), self.coord.member_ttl * 2 + 5)
                return
            except Exception as exc:
                if self._clock() + delay > deadline:
                    raise
                log.info("registering %s: store not ready (%r); retrying", self.node_id, exc)
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(self._heartbeats(stop), name="membership"),
                tg.create_task(self._watch_table(), name="table-watch"),
                tg.create_task(self._poll_table(), name="table-poll"),
            ]
            await stop.wait()
            for t in tasks[1:]:
                t.cancel()

    async def _beat(self) -> None:
        sent_at = self._clock()
        try:
            await self.coord.heartbeat(self.info)
        except BaseException:
            self._ok_since = None
            raise
        gap = (
            self._last_ok is None
            or sent_at - self._last_ok > self.coord.member_ttl * FENCE_FRACTION
        )
        if gap or self._ok_since is None:
            self._ok_since = sent_at
        if gap and self._last_ok is not None:
            log.warning(
                "membership heartbeat gap of %.1fs: reloading the table before serving writes",
                sent_at - self._last_ok,
            )
            self._stale = True
        self._last_ok = sent_at
        if self._stale:
            await self._reload()

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        period = self.coord.member_ttl / 3
        while not stop.is_set():
            try:
                await asyncio.wait_for(self._beat(), period * 2)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.heartbeats_failed += 1
                log.warning("membership heartbeat of %s failed: %r", self.node_id, exc)
            self._beat_now.clear()
            waits = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self._beat_now.wait()),
            ]
            try:
                await asyncio.wait(waits, timeout=period, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.coord.leave(self.info), 2.0)

    async def _reload(self) -> None:
        table, _ = await self.coord.load_table()
        if table is not None:
            await self._adopt(table)
        self._stale = False

    async def _adopt(self, table: PartitionTable) -> None:
        if self.table is not None and table.version <= self.table.version:
            return
        self.table = table
        for fn in self._listeners:
            try:
                fn(table)
            except Exception:
                log.exception("partition table listener failed on version %d", table.version)
        async with self._table_changed:
            self._table_changed.notify_all()

    async def _watch_table(self) -> None:
        while True:
            try:
                async for table in self.coord.watch_table():
                    await self._adopt(table)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("partition table watch failed (%r); restarting it", exc)
            await asyncio.sleep(0.5)

    async def _poll_table(self) -> None:
        while True:
            await asyncio.sleep(TABLE_POLL_S)
            try:
                table, _ = await asyncio.wait_for(self.coord.load_table(), 5.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("partition table poll failed: %r", exc)
                continue
            if table is not None:
                await self._adopt(table)
