"""The running edge: its configuration, its connection to the storage nodes, the message table,
its feature modules and the sessions they serve.

Feature modules (``features.py``) each get ``install(edge)`` at start-up: they register handlers
in ``edge.dispatcher``, and may add background tasks with ``edge.spawn`` and readiness gates with
``edge.require_ready``. Everything spawned is cancelled on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from libs.cluster import PartitionTable
from libs.crdt import HLC, PARTITION_COUNT
from libs.storage_client import StorageClient, StorageRouter
from services.edge.auth import DeviceRegistry, TokenVerifier, device_key_from_secret
from services.edge.config import EdgeConfig
from services.edge.dispatch import Dispatcher
from services.edge.features import FEATURES
from services.edge.metrics import EdgeMetrics

if TYPE_CHECKING:
    from services.edge.session import Session

log = logging.getLogger(__name__)

IDLE_SCAN_S = 10.0


class Edge:
    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.edge_id = config.edge_id
        self.metrics = EdgeMetrics()
        self.dispatcher = Dispatcher()
        self.clock = HLC(config.edge_id, max_drift_ms=config.max_drift_ms)
        self.verifier = (
            TokenVerifier(config.jwt_secret, issuer=config.jwt_issuer, audience=config.jwt_audience)
            if config.jwt_secret
            else None
        )
        self.devices = DeviceRegistry(device_key_from_secret(config.jwt_secret))
        self.sessions: dict[int, Session] = {}
        self._conn_ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ready_gates: list[Callable[[], bool]] = []
        self._stoppers: list[Callable[[], Awaitable[None]]] = []
        self.features: dict[str, Any] = {}  # feature name -> its runtime object
        self.started_at = time.monotonic()
        self.state = "starting"
        self.started = asyncio.Event()
        self.router: StorageRouter = self._make_router()

    def _make_router(self) -> StorageRouter:
        nodes = self.config.storage_nodes
        clients = {
            n.node_id: StorageClient(n.address, timeout=self.config.rpc_timeout_s) for n in nodes
        }
        if self.config.nats_url:  # the cluster's table replaces this one (cluster_view.py)
            from services.edge.cluster_router import ClusterRouter

            placeholder = PartitionTable.static([n.node_id for n in nodes] or ["-"], version=0)
            return ClusterRouter(placeholder, clients, retry_s=self.config.cluster_retry_s)
        table = PartitionTable.static(
            [n.node_id for n in nodes], addresses={n.node_id: n.address for n in nodes}
        )
        return StorageRouter(table, clients)

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self.config.nats_url:
            from services.edge.cluster_view import ClusterView

            await ClusterView.start(self)
        else:
            await self._adopt_partition_table()
        for module_name in FEATURES:
            module = importlib.import_module(module_name)
            module.install(self)
        self.spawn(self._reap_idle(), name="idle-reaper")
        log.info("edge %s handles %s", self.edge_id, ", ".join(self.dispatcher.types()))

    async def _adopt_partition_table(self) -> None:
        """Use the table the storage nodes believe in (it may differ from the static layout)."""
        deadline = time.monotonic() + 30
        while True:
            for client in self.router.clients.values():
                try:
                    info = await client.partition_info(timeout=2.0)
                except Exception:
                    continue
                table = info.table
                if all(table.owners) and len(table.owners) == PARTITION_COUNT:
                    known = {n.node_id: n.address for n in self.config.storage_nodes}
                    addresses = {**known, **table.addresses}
                    clients = dict(self.router.clients)
                    for node, address in addresses.items():
                        if node not in clients:
                            clients[node] = StorageClient(
                                address, timeout=self.config.rpc_timeout_s
                            )
                    self.router.update(
                        PartitionTable(table.version, table.owners, table.backups, addresses),
                        clients,
                    )
                    log.info("partition table version %d from %s", table.version, info.node_id)
                    return
            if time.monotonic() > deadline:
                log.warning("no storage node answered PartitionInfo; using the static table")
                return
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        self.state = "draining"
        for s in list(self.sessions.values()):
            s.close("server shutting down")
        for stop in reversed(self._stoppers):
            with contextlib.suppress(Exception):
                await stop()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.router.close()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """A background task owned by the edge: logged if it fails, cancelled on shutdown."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    def on_stop(self, fn: Callable[[], Awaitable[None]]) -> None:
        self._stoppers.append(fn)

    def require_ready(self, gate: Callable[[], bool]) -> None:
        """The edge reports ready only while every gate returns True."""
        self._ready_gates.append(gate)

    @property
    def ready(self) -> bool:
        return self.state == "ready" and all(g() for g in self._ready_gates)

    def mark_started(self) -> None:
        self.state = "ready"
        self.started.set()

    def bound_to(self, port: int) -> None:
        """The listener is bound; with ``--port 0`` this is where the port becomes known."""
        if self.config.port != port:
            self.config = dataclasses.replace(self.config, port=port)

    # --- sessions -----------------------------------------------------------------------------

    def next_conn_id(self) -> int:
        return next(self._conn_ids)

    def add_session(self, session: Session) -> None:
        self.sessions[session.conn_id] = session
        self.metrics.connections.set(len(self.sessions))

    def remove_session(self, session: Session) -> None:
        self.sessions.pop(session.conn_id, None)
        self.metrics.connections.set(len(self.sessions))

    def session_of_origin(self, origin: str) -> Session | None:
        edge_id, _, conn = origin.rpartition("/")
        if edge_id != self.edge_id or not conn.isdigit():
            return None
        return self.sessions.get(int(conn))

    async def _reap_idle(self) -> None:
        timeout = self.config.idle_timeout_s
        while True:
            await asyncio.sleep(min(IDLE_SCAN_S, timeout / 2))
            cutoff = time.monotonic() - timeout
            for s in list(self.sessions.values()):
                if s.authenticated and s.last_seen < cutoff:
                    s.close("idle timeout")
