"""Membership, the coordinator lease and the partition table, kept in NATS JetStream key-value
buckets (a Raft-replicated store), not in a protocol of our own.

- ``<prefix>-members``: one key per live member (``<role>.<node id>``: a storage node and the
  edge in front of it may share a node id), re-put every ``member_ttl / 3`` seconds; the
  bucket's max age drops a member that stops. Readers also judge liveness by the heartbeat time
  inside the value, so an expiry is noticed without waiting for the store to purge it.
- ``<prefix>-lease``: the coordinator lease, a key taken with create (only one can succeed) and
  kept with compare-and-set updates; it expires with the bucket's max age when its holder dies.
- ``<prefix>-table``: the partition table; every change is a compare-and-set on the previous
  revision, so two would-be coordinators can never both win.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import nats
from nats.js.api import KeyValueConfig
from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from libs.cluster.partition_table import NodeId, PartitionTable

log = logging.getLogger(__name__)

TABLE_KEY = "table"
LEASE_KEY = "coordinator"
_KEY_SAFE = re.compile(r"[^A-Za-z0-9_\-=]")
KV_DEL = "DEL"
KV_PURGE = "PURGE"


async def _next_update(watcher: Any) -> Any:
    """A KV watcher's next entry, or None after 5 s without one.

    nats-py waits with ``asyncio.wait_for``, which on Python 3.11 can turn a cancellation that
    races its timeout into a TimeoutError; treated as a quiet interval, that would keep a
    cancelled watch looping forever (and a node's shutdown waiting on it). A TimeoutError while
    our task is being cancelled is therefore the cancellation."""
    try:
        return await watcher.updates(timeout=5.0)
    except TimeoutError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError from None
        return None


def member_key(role: str, node_id: NodeId) -> str:
    """The membership key of a member: ``<role>.<node id>`` (unsafe characters as ``_``)."""
    return f"{_KEY_SAFE.sub('_', role)}.{_KEY_SAFE.sub('_', node_id)}"


class StoreUnavailable(Exception):
    """The coordination store could not be reached or has no quorum."""


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """What a member says about itself in its membership key."""

    node_id: NodeId
    role: str  # "storage" | "edge" | ...
    address: str = ""  # gRPC host:port (storage)
    websocket: str = ""  # ws://host:port (edge)
    started_ms: int = 0
    heartbeat_ms: int = 0
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return member_key(self.role, self.node_id)

    def alive(self, now_ms: int, ttl_s: float) -> bool:
        return now_ms - self.heartbeat_ms <= ttl_s * 1000

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> MemberInfo:
        d = json.loads(data)
        return cls(**d)


def encode_table(table: PartitionTable) -> bytes:
    nodes = list(table.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    doc = {
        "version": table.version,
        "nodes": nodes,
        "owners": [index[o] for o in table.owners],
        "backups": [[index[b] for b in bs] for bs in table.backups],
        "addresses": dict(table.addresses),
        "epochs": dict(table.epochs),
        "endpoints": dict(table.endpoints),
        "pending": {str(p): n for p, n in table.pending.items()},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def decode_table(data: bytes) -> PartitionTable:
    doc = json.loads(data)
    nodes = doc["nodes"]
    return PartitionTable(
        int(doc["version"]),
        tuple(nodes[i] for i in doc["owners"]),
        tuple(tuple(nodes[i] for i in bs) for bs in doc["backups"]),
        dict(doc.get("addresses", {})),
        {n: int(e) for n, e in doc.get("epochs", {}).items()},
        dict(doc.get("endpoints", {})),
        {int(p): n for p, n in doc.get("pending", {}).items()},
    )


class Coordination:
    """A connection to the coordination store. Create with ``await Coordination.connect(url)``."""

    def __init__(
        self,
        nc: Any,
        members: KeyValue,
        lease: KeyValue,
        table: KeyValue,
        *,
        member_ttl: float,
        lease_ttl: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._nc = nc
        self._members = members
        self._lease = lease
        self._table = table
        self.member_ttl = member_ttl
        self.lease_ttl = lease_ttl
        self._clock = clock
        self._lease_revision: int | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        prefix: str = "topgun",
        member_ttl: float = 3.0,
        lease_ttl: float = 3.0,
        replicas: int = 1,
        connect_timeout: float = 5.0,
        ready_timeout: float = 0.0,
        name: str = "",
    ) -> Coordination:
        """Connect and make sure the buckets exist (``replicas`` = JetStream replication factor).

        With ``ready_timeout`` it keeps trying for that long while the server is not up yet or
        JetStream has no quorum to create a replicated bucket (a cluster that is still forming).
        """
        deadline = time.monotonic() + ready_timeout
        delay = 0.1
        while True:
            try:
                return await cls._connect_once(
                    url,
                    prefix=prefix,
                    member_ttl=member_ttl,
                    lease_ttl=lease_ttl,
                    replicas=replicas,
                    connect_timeout=connect_timeout,
                    name=name or f"{prefix}-coordination",
                )
            except Exception as exc:
                if time.monotonic() + delay >= deadline:
                    raise StoreUnavailable(f"coordination store at {url}: {exc!r}") from exc
                log.info("coordination store at %s not ready (%r); retrying", url, exc)
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)

    @classmethod
    async def _connect_once(
        cls,
        url: str,
        *,
        prefix: str,
        member_ttl: float,
        lease_ttl: float,
        replicas: int,
        connect_timeout: float,
        name: str,
    ) -> Coordination:
        nc = await nats.connect(
            url,
            connect_timeout=connect_timeout,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            allow_reconnect=True,
            name=name,
        )
        try:
            js = nc.jetstream(timeout=connect_timeout)

            async def bucket(bucket_name: str, ttl: float | None) -> KeyValue:
                cfg = KeyValueConfig(bucket=bucket_name, history=1, ttl=ttl, replicas=replicas)
                try:
                    return await js.create_key_value(cfg)
                except BadRequestError:
                    # Exists already (possibly created by another member with other settings).
                    return await js.key_value(bucket_name)

            members = await bucket(f"{prefix}-members", member_ttl * 2)
            lease = await bucket(f"{prefix}-lease", lease_ttl)
            table = await bucket(f"{prefix}-table", None)
        except BaseException:
            with contextlib.suppress(Exception):
                await nc.close()
            raise
        return cls(nc, members, lease, table, member_ttl=member_ttl, lease_ttl=lease_ttl)

    @property
    def nc(self) -> Any:
        """The NATS connection, for plain publish/subscribe (cluster fan-out)."""
        return self._nc

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._nc.drain(), 5.0)
        with contextlib.suppress(Exception):
            await self._nc.close()

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    # --- membership ------------------------------------------------------------------------

    async def heartbeat(self, member: MemberInfo) -> None:
        """Put (or refresh) this member's key with the current time."""
        info = MemberInfo(**{**asdict(member), "heartbeat_ms": self.now_ms()})
        await self._members.put(member.key, info.encode())

    async def leave(self, member: MemberInfo) -> None:
        with contextlib.suppress(KeyNotFoundError):
            await self._members.delete(member.key)

    async def members(self, role: str) -> dict[NodeId, MemberInfo]:
        """Members of ``role`` whose last heartbeat is within ``member_ttl``, by node id."""
        out: dict[NodeId, MemberInfo] = {}
        try:
            keys = await self._members.keys()
        except Exception as exc:  # nats raises NoKeysError (a plain Error) on an empty bucket
            if "no keys" in str(exc).lower():
                return out
            raise
        now = self.now_ms()
        for k in keys:
            try:
                entry = await self._members.get(k)
            except KeyNotFoundError:
                continue
            if entry.value is None:
                continue
            info = MemberInfo.decode(entry.value)
            if info.role == role and info.alive(now, self.member_ttl):
                out[info.node_id] = info
        return out

    async def watch_members(self) -> AsyncIterator[tuple[str, MemberInfo | None]]:
        """``(key, info)`` for every membership put as it happens (the current ones first);
        ``(key, None)`` when a key is deleted or expires."""
        watcher = await self._members.watchall()
        try:
            while True:
                entry = await _next_update(watcher)
                if entry is None:
                    continue
                if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                    yield entry.key, None
                    continue
                try:
                    yield entry.key, MemberInfo.decode(entry.value)
                except (ValueError, TypeError) as exc:
                    log.warning("unreadable membership entry %s: %s", entry.key, exc)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    async def keep_alive(self, member: MemberInfo, stop: asyncio.Event) -> None:
        """Heartbeat every ``member_ttl / 3`` until ``stop`` is set; then leave."""
        period = self.member_ttl / 3
        while not stop.is_set():
            try:
                await self.heartbeat(member)
            except Exception as exc:
                log.warning("membership heartbeat for %s failed: %s", member.node_id, exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), period)
        with contextlib.suppress(Exception):
            await self.leave(member)

    # --- coordinator lease -----------------------------------------------------------------

    async def acquire_or_renew_lease(self, holder: str) -> bool:
        """True while ``holder`` holds the coordinator lease; takes it when it is free."""
        value = json.dumps({"holder": holder, "at": self.now_ms()}).encode()
        if self._lease_revision is not None:
            try:
                self._lease_revision = await self._lease.update(
                    LEASE_KEY, value, last=self._lease_revision
                )
                return True
            except (KeyWrongLastSequenceError, KeyNotFoundError):
                self._lease_revision = None
            except Exception as exc:
                log.warning("lease renewal failed: %s", exc)
                self._lease_revision = None
                return False
        for _ in range(2):
            try:
                self._lease_revision = await self._lease.create(LEASE_KEY, value)
                log.info("%s took the coordinator lease", holder)
                return True
            except KeyWrongLastSequenceError:
                return False
            except KeyNotFoundError:
                # The old lease expired (max age) between create's write, refused because it
                # still existed, and create's look at it: it is free now, so try again.
                continue
        return False

    async def release_lease(self, holder: str) -> None:
        """Give the lease up (on shutdown) so another node takes over without waiting for expiry."""
        if self._lease_revision is None:
            return
        with contextlib.suppress(Exception):  # someone else's lease by now: nothing to release
            await self._lease.delete(LEASE_KEY, last=self._lease_revision)
        self._lease_revision = None
        log.info("%s released the coordinator lease", holder)

    async def lease_holder(self) -> str | None:
        try:
            entry = await self._lease.get(LEASE_KEY)
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        holder = json.loads(entry.value).get("holder")
        return str(holder) if holder is not None else None

    # --- partition table -------------------------------------------------------------------

    async def load_table(self) -> tuple[PartitionTable | None, int]:
        """The current table and its revision (``(None, 0)`` before the first one)."""
        try:
            entry = await self._table.get(TABLE_KEY)
        except KeyNotFoundError:
            return None, 0
        if entry.value is None:
            return None, 0
        return decode_table(entry.value), int(entry.revision or 0)

    async def cas_table(self, table: PartitionTable, expected_revision: int) -> int | None:
        """Write ``table`` if the stored revision is still ``expected_revision`` (0 = none yet).

        Returns the new revision, or None when someone else wrote first.
        """
        data = encode_table(table)
        try:
            if expected_revision == 0:
                return int(await self._table.create(TABLE_KEY, data))
            return int(await self._table.update(TABLE_KEY, data, last=expected_revision))
        except KeyWrongLastSequenceError:
            return None

    async def watch_table(self) -> AsyncIterator[PartitionTable]:
        """Every table version as it is written, starting with the current one."""
        watcher = await self._table.watch(TABLE_KEY)
        try:
            while True:
                entry = await _next_update(watcher)
                if entry is None or entry.value is None:
                    continue
                yield decode_table(entry.value)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()
