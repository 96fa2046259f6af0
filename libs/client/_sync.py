"""Merkle delta sync of open maps (PROTOCOL.md section 5, CRDT.md 8.3).

On every session the client starts one walk per open map: ``SYNC_INIT`` (LWW) or
``ORMAP_SYNC_INIT`` (OR). When the server's root differs from the local one, the client asks
for the children of ``""`` and descends only into buckets whose hashes differ, down to the
depth-3 leaves, whose records it merges. Requests are pipelined: every differing child is asked
for as soon as its parent's answer arrives. LWW sync is pull-only (local writes travel in the op
log); the OR walk also pushes, with ``ORMAP_PUSH_DIFF``, the keys of every leaf it merged and of
every bucket the server does not have.

A walk is done when no request of it is outstanding; an LWW map that still differs from the
root the server reported is walked again (at most three rounds), which fetches only the buckets
that still differ. A server that never answers a request
(TopGun's HEAD server stays silent for a path it does not have) cannot stall the client: a walk
with no progress for ``stall_timeout`` seconds is given up and counted as done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from libs.client import _protocol as proto
from libs.client._maps import LwwMapHandle, OrMapHandle
from libs.crdt import fnv1a, hash_hex

log = logging.getLogger("topgun.client")

_ROOT = "<root>"
_MAX_ROUNDS = 3
_MERGE_BATCH = 2048  # leaf records merged together (the vectorised merge pays off in bulk)
_MERGE_DELAY = 0.02  # ...or after this long, whichever comes first
MapHandle = LwwMapHandle | OrMapHandle


@dataclass(slots=True)
class _Walk:
    handle: MapHandle
    outstanding: set[str] = field(default_factory=set)
    last_progress: float = field(default_factory=time.monotonic)
    records_merged: int = 0
    started: float = field(default_factory=time.monotonic)
    # LWW leaf records received but not merged yet: merged in batches (see on_leaf).
    leaf_records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    server_root: int | None = None
    round: int = 1


@dataclass(frozen=True, slots=True)
class SyncStats:
    """How the last completed walk of a map went."""

    map_name: str
    records_merged: int
    seconds: float
    complete: bool


class MerkleSync:
    """The walks of the current session."""

    def __init__(
        self,
        sender: Any,
        *,
        last_sync: Callable[[str], int],
        save_last_sync: Callable[[str, int], None],
        on_reset: Callable[[MapHandle], None],
        on_done: Callable[[], None],
        has_pending: Callable[[str], bool] = lambda name: False,
        stall_timeout: float = 30.0,
    ) -> None:
        self._sender = sender
        self._has_pending = has_pending
        self._last_sync = last_sync
        self._save_last_sync = save_last_sync
        self._on_reset = on_reset
        self._on_done = on_done
        self.stall_timeout = stall_timeout
        self._walks: dict[str, _Walk] = {}
        self._synced: dict[str, asyncio.Event] = {}
        self._watchdog: asyncio.TimerHandle | None = None
        self._merge_scheduled = False
        self.stats: dict[str, SyncStats] = {}

    # --- lifecycle ---

    @property
    def busy(self) -> bool:
        return bool(self._walks)

    def synced_event(self, name: str) -> asyncio.Event:
        ev = self._synced.get(name)
        if ev is None:
            ev = self._synced[name] = asyncio.Event()
        return ev

    def start(self, handle: MapHandle, round: int = 1, merged: int = 0) -> None:
        """Begin (or restart) the walk of one map on the current session."""
        name = handle.name
        self.synced_event(name).clear()
        walk = _Walk(handle, {_ROOT}, records_merged=merged, round=round)
        self._walks[name] = walk
        last = self._last_sync(name)
        if isinstance(handle, LwwMapHandle):
            msg = proto.sync_init(name, last)
        else:
            msg = proto.ormap_sync_init(
                name, handle.merkle.root, handle.merkle.get_buckets(""), last
            )
        if not self._sender.send_nowait(msg):
            del self._walks[name]
            return
        self._arm()

    def session_lost(self) -> None:
        for walk in self._walks.values():
            self._merge_leaves(walk)  # what arrived is good data, even if the walk is cut short
        self._walks.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _arm(self) -> None:
        if self._watchdog is None:
            loop = asyncio.get_running_loop()
            self._watchdog = loop.call_later(self.stall_timeout / 4, self._check_stalls)

    def _check_stalls(self) -> None:
        self._watchdog = None
        now = time.monotonic()
        for name, walk in list(self._walks.items()):
            if now - walk.last_progress > self.stall_timeout:
                log.warning(
                    "sync of %r made no progress for %.0fs (%d requests unanswered); giving up",
                    name,
                    self.stall_timeout,
                    len(walk.outstanding),
                )
                self._finish(name, walk, complete=False)
        if self._walks:
            self._arm()

    def _finish(self, name: str, walk: _Walk, complete: bool = True) -> None:
        self._merge_leaves(walk)
        if (
            complete
            and isinstance(walk.handle, LwwMapHandle)
            and walk.server_root is not None
            and walk.server_root != 0
            and walk.handle.merkle.root != walk.server_root
            and walk.round < _MAX_ROUNDS
            and not self._has_pending(name)
        ):
            # Still different from the server although none of our own writes are in flight
            # (an answer went missing, or the map changed during the walk): walk again; only
            # the buckets that still differ are fetched.
            log.info("sync of %r ended off the server root; walking again", name)
            self.start(walk.handle, walk.round + 1, walk.records_merged)
            return
        self._walks.pop(name, None)
        self.stats[name] = SyncStats(
            name, walk.records_merged, time.monotonic() - walk.started, complete
        )
        self.synced_event(name).set()
        if not self._walks:
            if self._watchdog is not None:
                self._watchdog.cancel()
                self._watchdog = None
            self._on_done()

    def _answered(self, name: str, walk: _Walk, path: str) -> None:
        walk.outstanding.discard(path)
        walk.last_progress = time.monotonic()
        if not walk.outstanding:
            self._finish(name, walk)

    def _request(self, walk: _Walk, path: str) -> None:
        walk.outstanding.add(path)
        name = walk.handle.name
        if isinstance(walk.handle, LwwMapHandle):
            self._sender.send_nowait(proto.merkle_req_bucket(name, path))
        else:
            self._sender.send_nowait(proto.ormap_merkle_req_bucket(name, path))

    def _walk_for(self, name: str, kind: type) -> _Walk | None:
        walk = self._walks.get(name)
        if walk is None or not isinstance(walk.handle, kind):
            return None
        return walk

    # --- LWW ---

    def on_root(self, msg: proto.SyncRespRoot) -> None:
        walk = self._walk_for(msg.map_name, LwwMapHandle)
        if walk is None or _ROOT not in walk.outstanding:
            return
        if msg.timestamp is not None:
            walk.handle.crdt.hlc.update(msg.timestamp)
            self._save_last_sync(msg.map_name, msg.timestamp["millis"])
        walk.server_root = msg.root_hash
        # An empty server map has nothing to pull (LWW sync is pull-only; local writes travel
        # in the op log).
        if msg.root_hash != 0 and msg.root_hash != walk.handle.merkle.root:
            self._request(walk, "")
        self._answered(msg.map_name, walk, _ROOT)

    def on_buckets(self, msg: proto.SyncRespBuckets | proto.OrSyncRespBuckets) -> None:
        is_or = isinstance(msg, proto.OrSyncRespBuckets)
        walk = self._walk_for(msg.map_name, OrMapHandle if is_or else LwwMapHandle)
        if walk is None or msg.path not in walk.outstanding:
            return
        local = walk.handle.merkle.get_buckets(msg.path)
        for c, h in msg.buckets.items():
            if local.get(c, 0) != h:
                self._request(walk, msg.path + c)
        if is_or:
            assert isinstance(walk.handle, OrMapHandle)
            missing = [msg.path + c for c, h in local.items() if h and c not in msg.buckets]
            if missing:
                self._push_prefixes(walk.handle, missing)
        self._answered(msg.map_name, walk, msg.path)

    def on_leaf(self, msg: proto.SyncRespLeaf) -> None:
        walk = self._walk_for(msg.map_name, LwwMapHandle)
        if walk is None or msg.path not in walk.outstanding:
            return
        walk.leaf_records.extend(msg.records)
        if len(walk.leaf_records) >= _MERGE_BATCH:
            self._merge_leaves(walk)
        elif not self._merge_scheduled:
            self._merge_scheduled = True
            asyncio.get_running_loop().call_later(_MERGE_DELAY, self._merge_all)
        self._answered(msg.map_name, walk, msg.path)

    def _merge_all(self) -> None:
        self._merge_scheduled = False
        for walk in self._walks.values():
            self._merge_leaves(walk)

    @staticmethod
    def _merge_leaves(walk: _Walk) -> None:
        if walk.leaf_records:
            records, walk.leaf_records = walk.leaf_records, []
            assert isinstance(walk.handle, LwwMapHandle)
            walk.records_merged += walk.handle.merge_many(records)

    def on_reset(self, msg: proto.SyncResetRequired) -> None:
        walk = self._walks.get(msg.map_name)
        if walk is None:
            return
        log.info("server asked for a full resync of %r", msg.map_name)
        self._on_reset(walk.handle)
        self._save_last_sync(msg.map_name, 0)
        self.start(walk.handle)

    # --- OR ---

    def on_or_root(self, msg: proto.OrSyncRespRoot) -> None:
        walk = self._walk_for(msg.map_name, OrMapHandle)
        if walk is None or _ROOT not in walk.outstanding:
            return
        handle = walk.handle
        assert isinstance(handle, OrMapHandle)
        if msg.timestamp is not None:
            handle.crdt.hlc.update(msg.timestamp)
            self._save_last_sync(msg.map_name, msg.timestamp["millis"])
        if msg.full_resync:
            self._on_reset(handle)
            self._request(walk, "")
        elif msg.root_hash != handle.merkle.root:
            if msg.root_hash == 0:
                self._push_keys(handle, handle.crdt.keys())
            else:
                self._request(walk, "")
        self._answered(msg.map_name, walk, _ROOT)

    def on_or_leaf(self, msg: proto.OrSyncRespLeaf) -> None:
        walk = self._walk_for(msg.map_name, OrMapHandle)
        handle = walk.handle if walk is not None else None
        if msg.path is None:
            # ORMAP_DIFF_RESPONSE: merge whatever the server sent for an open map.
            if walk is None:
                return
        elif walk is None or msg.path not in walk.outstanding:
            return
        assert isinstance(handle, OrMapHandle)
        keys = []
        for entry in msg.entries:
            handle.merge_entry(entry.key, entry.records, entry.tombstones)
            keys.append(entry.key)
        assert walk is not None
        walk.records_merged += sum(len(e.records) for e in msg.entries)
        if msg.path is not None:
            server_keys = set(keys)
            keys.extend(k for k in handle.merkle.keys_in_bucket(msg.path) if k not in server_keys)
            self._push_keys(handle, keys)
            self._answered(msg.map_name, walk, msg.path)

    def _push_prefixes(self, handle: OrMapHandle, prefixes: list[str]) -> None:
        all_keys = handle.crdt.keys()
        keys = [k for k in all_keys if any(_path_of(k).startswith(p) for p in prefixes)]
        self._push_keys(handle, keys)

    def _push_keys(self, handle: OrMapHandle, keys: Iterable[str]) -> None:
        entries = [handle.entry_for_push(k) for k in keys]
        entries = [e for e in entries if e["records"] or e["tombstones"]]
        for i in range(0, len(entries), 500):
            self._sender.send_nowait(proto.ormap_push_diff(handle.name, entries[i : i + 500]))


def _path_of(key: str) -> str:
    return hash_hex(fnv1a(key))
