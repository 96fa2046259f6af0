"""The all-in-one launcher: storage nodes, then the optional services, then the edge.

It owns every child: each is started with its stdout piped (read up to its ``PORT=`` line, then
drained to our stderr so a child can never block on a full pipe or leak into our stdout), and
with a parent-death signal so an abruptly killed launcher does not leave orphans. On SIGTERM or
SIGINT, or when any child exits on its own, the launcher stops them all: SIGTERM, then SIGKILL
after a grace period.

Its own stdout carries exactly the banner and the ``PORT=<n>`` line of the TopGun process
contract (PROTOCOL.md 16); logs go to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp

from services.up.cluster import CoordinationStore, start_store
from services.up.config import LaunchConfig

log = logging.getLogger("services.up")

_PORT_LINE = re.compile(rb"^PORT=(\d+)\s*$")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ChildFailed(RuntimeError):
    pass


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: asyncio.subprocess.Process
    port: int = 0
    drain: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None


@dataclass
class Launcher:
    config: LaunchConfig
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    children: list[Child] = field(default_factory=list)
    store: CoordinationStore | None = None

    async def start_child(
        self, name: str, module: str, args: Sequence[str], *, timeout: float = 60.0
    ) -> Child:
        argv = [sys.executable, "-m", module, *args]
        env = dict(self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # inherited: children log to our stderr
            env=env,
            cwd=self.config.workdir or None,
            preexec_fn=_die_with_parent,
        )
        child = Child(name, argv, proc)
        self.children.append(child)
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChildFailed(f"{name} printed no PORT= line within {timeout:.0f}s")
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), remaining)
            except TimeoutError:
                continue
            if not line:
                await proc.wait()
                raise ChildFailed(f"{name} exited with {proc.returncode} before it was ready")
            m = _PORT_LINE.match(line.strip())
            if m:
                child.port = int(m.group(1))
                break
            sys.stderr.write(f"[{name}] {line.decode(errors='replace')}")
        child.drain = asyncio.create_task(self._drain(child))
        log.info("%s ready on port %d (pid %d)", name, child.port, proc.pid)
        return child

    async def _drain(self, child: Child) -> None:
        assert child.proc.stdout is not None
        while True:
            line = await child.proc.stdout.readline()
            if not line:
                return
            sys.stderr.write(f"[{child.name}] {line.decode(errors='replace')}")

    async def start_all(self) -> int:
        """Start everything; returns the edge's port."""
        cfg = self.config
        self.store = await start_store(cfg)
        log.info("coordination store at %s", self.store.url)
        if cfg.clustered:
            return await self.start_member(self.store)
        ports = [free_port() for _ in range(cfg.storage_nodes)]
        peers = ",".join(f"n{i + 1}=127.0.0.1:{p}" for i, p in enumerate(ports))
        storage_args = ["--storage", cfg.storage, "--data-dir", cfg.data_dir]
        storage_args += self.store.storage_args()
        nodes = await asyncio.gather(
            *(
                self.start_child(
                    f"storage-n{i + 1}",
                    "services.storage",
                    ["--node-id", f"n{i + 1}", "--port", str(p), "--peers", peers, *storage_args],
                )
                for i, p in enumerate(ports)
            )
        )
        storage_nodes = ",".join(f"n{i + 1}=127.0.0.1:{c.port}" for i, c in enumerate(nodes))
        # The optional services and the edge start side by side: the edge is told the services'
        # ports up front and connects to them when it first needs them.
        extra_edge_args: list[str] = []
        optional = [
            (svc, free_port())
            for svc in OPTIONAL_SERVICES
            if svc.name not in self.config.without and svc.available()
        ]
        for svc, port in optional:
            extra_edge_args += [svc.edge_flag, f"127.0.0.1:{port}"]
        edge_args = [
            "--host",
            cfg.host,
            "--port",
            str(cfg.port),
            "--edge-id",
            cfg.edge_id,
            "--storage-nodes",
            storage_nodes,
            *extra_edge_args,
            *self.store.edge_args(),
        ]
        if cfg.no_auth:
            edge_args.append("--no-auth")
        *_, edge = await asyncio.gather(
            *(
                self.start_child(svc.name, svc.module, svc.args(storage_nodes, cfg, port))
                for svc, port in optional
            ),
            self.start_child("edge", "services.edge", edge_args),
        )
        await self._wait_ready(edge.port)
        return edge.port

    async def start_member(self, store: CoordinationStore) -> int:
        """One cluster member: a storage node and the edge in front of it (NATS runs already)."""
        cfg = self.config
        node = cfg.member_name
        storage = await self.start_child(
            f"storage-{node}",
            "services.storage",
            [
                "--node-id",
                node,
                "--host",
                "127.0.0.1" if cfg.host in ("0.0.0.0", "::", "") else cfg.host,
                "--port",
                "0",
                "--storage",
                cfg.storage,
                "--data-dir",
                cfg.data_dir,
                *store.storage_args(),
            ],
            timeout=90.0,
        )
        edge_args = [
            "--host",
            cfg.host,
            "--port",
            str(cfg.port),
            "--edge-id",
            cfg.edge_id,
            "--colocated-storage",
            node,
            "--storage-nodes",
            f"{node}=127.0.0.1:{storage.port}",
            *store.edge_args(),
        ]
        if cfg.no_auth:
            edge_args.append("--no-auth")
        edge = await self.start_child("edge", "services.edge", edge_args, timeout=90.0)
        await self._wait_ready(edge.port, timeout=90.0)
        return edge.port

    async def _wait_ready(self, port: int, timeout: float = 30.0) -> None:
        url = f"http://127.0.0.1:{port}/ready"
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise ChildFailed(f"edge on port {port} did not become ready within {timeout:.0f}s")

    async def wait_any_exit(self) -> Child:
        waits = {asyncio.create_task(c.proc.wait()): c for c in self.children}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            return waits[next(iter(done))]
        finally:
            for t in waits:
                t.cancel()

    async def stop_all(self, grace: float = 5.0, storage_grace: float = 40.0) -> None:
        """Stop in dependency order: the edge (it closes client sockets cleanly), then the
        services that follow the storage nodes, then the storage nodes; SIGKILL what outlives
        its grace period. A storage node gets longer: it commits what it acknowledged before it
        exits (its own flush deadline is 30 s), and killing it would lose that."""
        tiers: dict[int, list[Child]] = {}
        for c in self.children:
            tier = 0 if c.name == "edge" else 2 if c.name.startswith("storage-") else 1
            tiers.setdefault(tier, []).append(c)
        for tier in sorted(tiers):
            group = tiers[tier]
            for c in group:
                if c.alive:
                    with contextlib.suppress(ProcessLookupError):
                        c.proc.send_signal(signal.SIGTERM)
            limit = storage_grace if tier == 2 else grace
            await asyncio.gather(*(self._reap(c, limit) for c in group))
        if self.store is not None:  # the coordination store goes last: the others leave through it
            await asyncio.to_thread(self.store.stop)

    async def _reap(self, c: Child, grace: float) -> None:
        try:
            await asyncio.wait_for(c.proc.wait(), grace)
        except TimeoutError:
            log.warning("%s did not stop within %.0fs; killing it", c.name, grace)
            with contextlib.suppress(ProcessLookupError):
                c.proc.kill()
            await c.proc.wait()
        if c.drain is not None:
            c.drain.cancel()


@dataclass(frozen=True)
class OptionalService:
    """A service the launcher starts when its module exists."""

    name: str
    module: str
    edge_flag: str  # how the edge is told its address
    keeps_data: bool = False  # gets --data-dir <data-dir>/<name> and --backend memory|disk

    def available(self) -> bool:
        try:
            return importlib.util.find_spec(f"{self.module}.__main__") is not None
        except ModuleNotFoundError:
            return False

    def args(self, storage_nodes: str, config: LaunchConfig, port: int = 0) -> list[str]:
        args = ["--port", str(port), "--storage-nodes", storage_nodes]
        if self.keeps_data:
            backend = "memory" if config.storage == "memory" else "disk"
            args += ["--data-dir", os.path.join(config.data_dir, self.name), "--backend", backend]
        return args


OPTIONAL_SERVICES: tuple[OptionalService, ...] = (
    OptionalService("query_dag", "services.query_dag", "--query-dag"),
    OptionalService("search", "services.search", "--search", keeps_data=True),
)


async def run(config: LaunchConfig) -> int:
    launcher = Launcher(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    code = 0
    try:
        starting = asyncio.create_task(launcher.start_all())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
            return 0
        stopping.cancel()
        port = starting.result()
        host = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host
        sys.stdout.write(
            f"TopGun-py is up: ws://{host}:{port}/ws  (HTTP sync http://{host}:{port}/sync, "
            + (
                f"cluster member {config.member_name}, {config.storage})\n"
                if config.clustered
                else f"{config.storage_nodes} storage nodes, {config.storage})\n"
            )
        )
        sys.stdout.write(f"PORT={port}\n")
        sys.stdout.flush()
        waiting = asyncio.create_task(launcher.wait_any_exit())
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if waiting in done:
            child = waiting.result()
            log.error("%s exited with %s; stopping everything", child.name, child.proc.returncode)
            code = 1
        for t in (waiting, stopping):
            t.cancel()
    except ChildFailed as e:
        log.error("%s", e)
        code = 1
    finally:
        await launcher.stop_all()
    return code
