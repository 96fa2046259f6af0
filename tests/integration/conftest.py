"""Fixtures that start real service processes on free loopback ports and always stop them.

Storage: ``storage_nodes`` starts storage nodes (standalone or as a static cluster) for one
test; ``storage_node`` is one standalone memory node shared by a module; ``pg_dsn`` is the
PostgreSQL DSN, or a skip with the reason when the server is unreachable.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from tests.support.processes import ServiceProcess, free_port, start_service

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


class StorageNodes:
    """Starts ``python -m services.storage`` processes and stops every one of them at the end."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.procs: list[ServiceProcess] = []

    def start(
        self,
        node_id: str = "storage-1",
        *,
        storage: str = "memory",
        peers: Mapping[str, int] | None = None,
        extra: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> ServiceProcess:
        args = ["--node-id", node_id, "--storage", storage, "--data-dir", str(self.data_dir)]
        if peers:
            args += ["--port", str(peers[node_id])]
            args += ["--peers", ",".join(f"{n}=127.0.0.1:{p}" for n, p in peers.items())]
        else:
            args += ["--port", "0"]
        proc = start_service("services.storage", [*args, *extra], env=env)
        self.procs.append(proc)
        return proc

    def cluster(
        self, count: int, *, storage: str = "memory", extra: Sequence[str] = ()
    ) -> dict[str, ServiceProcess]:
        """``count`` nodes that know each other (static partition table, one backup each)."""
        ports = {f"s{i + 1}": free_port() for i in range(count)}
        return {n: self.start(n, storage=storage, peers=ports, extra=extra) for n in ports}

    def stop_all(self) -> None:
        for p in self.procs:
            p.stop()


@pytest.fixture
def storage_nodes(tmp_path: Path) -> Iterator[StorageNodes]:
    nodes = StorageNodes(tmp_path)
    try:
        yield nodes
    finally:
        nodes.stop_all()


@pytest.fixture(scope="module")
def storage_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    nodes = StorageNodes(tmp_path_factory.mktemp("storage"))
    try:
        yield nodes.start("solo", storage="memory")
    finally:
        nodes.stop_all()


def _pg_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=2):
            pass
    except OSError:
        return False
    import asyncpg

    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(PG_DSN, timeout=3)
        except Exception:
            return False
        await conn.close()
        return True

    return asyncio.run(probe())


@pytest.fixture
def pg_dsn() -> str:
    if not _pg_up():
        pytest.skip(f"PostgreSQL is not reachable at {PG_DSN} (trust auth, database test)")
    return PG_DSN


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A fresh schema name for one test; dropped afterwards."""
    import asyncpg

    name = f"t_storage_{uuid.uuid4().hex[:12]}"
    yield name

    async def drop() -> None:
        conn = await asyncpg.connect(pg_dsn, timeout=5)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        finally:
            await conn.close()

    asyncio.run(drop())
