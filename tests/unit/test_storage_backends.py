"""Durable stores: what a node writes through the group-commit writer comes back identical
(records, tombstones, OR tags, leaf sums, sequence numbers, counters) when a node loads it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import msgpack
import pytest

from libs.crdt.hashing import PARTITION_COUNT
from libs.storage_client import OR_ADD, OR_REMOVE, PUT, REMOVE, OpBatchBuilder
from services.storage.backends import LoadChunk, WriteBatch, open_backend
from services.storage.backends.postgres import PostgresBackend
from services.storage.changes import ChangeSet
from services.storage.config import load_config
from services.storage.node import StorageNode
from services.storage.writer import GroupCommitWriter
from topgun_rpc import common_pb2, storage_pb2

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def pk(v: object) -> bytes:
    return msgpack.packb(v, use_bin_type=True)


async def _pg_reachable() -> bool:
    try:
        conn = await asyncpg.connect(PG_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


def _node(storage: str, tmp_path: Path, schema: str, compact_after: int = 200_000) -> StorageNode:
    cfg = load_config(
        ["--storage", storage, "--data-dir", str(tmp_path), "--pg-schema", schema], env={}
    )
    backend = open_backend(
        storage, sqlite_path=cfg.sqlite_path, pg_schema=schema, compact_after=compact_after
    )
    return StorageNode(cfg, backend)


def _ops() -> list[common_pb2.OpBatch]:
    b1 = OpBatchBuilder()
    for i in range(300):
        b1.append(
            "users",
            f"u{i}",
            PUT,
            1000 + i,
            i % 3,
            "w1",
            pk({"i": i}),
            ttl_ms=60000 if i % 7 == 0 else 0,
        )
    b1.append("tags", "post-1", OR_ADD, 500, 0, "w2", pk("red"), tag="500:0:w2")
    b1.append("tags", "post-1", OR_ADD, 501, 0, "w2", pk({"c": "blue"}), tag="501:0:w2")
    b1.append("tags", "post-2", OR_ADD, 502, 0, "w2", pk(7), tag="502:0:w2")
    b2 = OpBatchBuilder()
    for i in range(0, 300, 10):
        b2.append("users", f"u{i}", REMOVE, 5000 + i, 0, "w1")
    b2.append("users", "u1", PUT, 6000, 0, "w3", pk("again"))
    b2.append("tags", "post-1", OR_REMOVE, 600, 0, "w2", tag="500:0:w2")
    b2.append("tags", "post-3", OR_REMOVE, 601, 0, "w2", tag="999:0:zz")  # remove before add
    return [b1.build(), b2.build()]


def _snapshot(node: StorageNode) -> dict[str, Any]:
    store = node.store
    out: dict[str, Any] = {"seqs": list(store.seqs), "counters": {}}
    for name in store.maps:
        rows = sorted(
            (
                p,
                k,
                t,
                type(r).__name__,
                r.millis,
                r.counter,
                r.node_id,
                getattr(r, "value", b""),
                getattr(r, "ttl_ms", 0),
                r.seq,
            )
            for p, k, t, r in store.iter_records(
                name, range(PARTITION_COUNT), include_tombstones=True
            )
        )
        sums, kind, count = store.leaf_sums(name, range(PARTITION_COUNT))
        out[name] = (kind, count, rows, sums.tobytes())
    out["counters"] = {n: node.counters.get(n) for n in ("likes",)}
    return out


async def _session(
    storage: str,
    tmp_path: Path,
    schema: str,
    batches: list[common_pb2.OpBatch],
    *,
    compact: bool = False,
    drop: bool = False,
) -> dict[str, Any]:
    """Start a node on the store, load it, apply ``batches`` (PERSISTED), optionally compact,
    and return a snapshot of its state as loaded plus written."""
    node = _node(storage, tmp_path, schema, compact_after=1)
    await node.backend.open()
    try:
        await node.load()
        writer = asyncio.create_task(node.writer.run())
        for ops in batches:
            resp = await node.apply(
                storage_pb2.ApplyRequest(
                    ops=ops, write_concern=common_pb2.PERSISTED, timeout_ms=10000
                )
            )
            assert resp.achieved == common_pb2.PERSISTED
        if batches:
            node.counter_merge(
                storage_pb2.CounterState(name="likes", positive={"a": 3, "b": 1}, negative={"a": 1})
            )
        assert await node.writer.flush(10)
        if compact:
            assert await node.compact() > 0
        node.writer.close()
        await writer
        return _snapshot(node)
    finally:
        if drop and isinstance(node.backend, PostgresBackend):
            await node.backend.drop_schema()
        await node.backend.close()


async def _write_and_reload(storage: str, tmp_path: Path, schema: str) -> None:
    first, second = _ops()
    await _session(storage, tmp_path, schema, [first], compact=storage == "sqlite")
    before = await _session(storage, tmp_path, schema, [second])
    after = await _session(storage, tmp_path, schema, [], drop=True)
    assert after.keys() == before.keys()
    for key in before:
        assert after[key] == before[key], key
    assert before["users"][1] == 300 and before["counters"]["likes"] == (
        {"a": 3.0, "b": 1.0},
        {"a": 1.0},
    )


async def test_sqlite_store_gives_back_everything_a_node_wrote(tmp_path: Path) -> None:
    await _write_and_reload("sqlite", tmp_path, "unused")


async def test_sqlite_compaction_after_a_restart_keeps_what_was_only_in_the_log(
    tmp_path: Path,
) -> None:
    first, second = _ops()
    await _session("sqlite", tmp_path, "unused", [first])  # only logged, never compacted
    before = await _session("sqlite", tmp_path, "unused", [second], compact=True)
    after = await _session("sqlite", tmp_path, "unused", [])
    for key in before:
        assert after[key] == before[key], key
    from services.storage.backends.sqlite import SqliteBackend

    b = SqliteBackend(tmp_path / "storage-storage-1.sqlite3")
    await b.open()
    try:
        logged = await b._run(lambda: b.conn.execute("SELECT count(*) FROM log").fetchone()[0])
    finally:
        await b.close()
    assert logged == 0


@pytest.mark.postgres
async def test_postgres_store_gives_back_everything_a_node_wrote(tmp_path: Path) -> None:
    if not await _pg_reachable():
        pytest.skip(f"PostgreSQL is not reachable at {PG_DSN}")
    await _write_and_reload(PG_DSN, tmp_path, f"t_backend_{uuid.uuid4().hex[:10]}")


async def test_sqlite_file_is_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    from services.storage.backends.sqlite import SqliteBackend

    b = SqliteBackend(tmp_path / "n.sqlite3")
    await b.open()
    try:
        mode = await b._run(lambda: b.conn.execute("PRAGMA journal_mode").fetchone()[0])
        sync = await b._run(lambda: b.conn.execute("PRAGMA synchronous").fetchone()[0])
    finally:
        await b.close()
    assert (mode, sync) == ("wal", 2)


# --- the group-commit writer ----------------------------------------------------------------


class _RecordingBackend:
    """A backend whose commits block until the test lets them through, and can fail."""

    name = "recording"

    def __init__(self) -> None:
        self.batches: list[WriteBatch] = []
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.fail_next = 0

    async def open(self) -> None: ...

    async def load(self) -> AsyncIterator[LoadChunk]:
        return
        yield

    async def write(self, batch: WriteBatch) -> None:
        self.entered.set()
        await self.gate.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise OSError("disk on fire")
        self.batches.append(batch)

    async def close(self) -> None: ...


def _cs(n: int) -> ChangeSet:
    cs = ChangeSet(["m"])
    for i in range(n):
        cs.append(0, f"k{i}", PUT, 1, 0, "n", b"\x01", "", 0, 0, i + 1, "")
    return cs


async def _run_writer(
    test: Callable[[GroupCommitWriter, _RecordingBackend], Any], linger_s: float = 0.0
) -> None:
    backend = _RecordingBackend()
    w = GroupCommitWriter(backend, linger_s=linger_s)  # type: ignore[arg-type]
    task = asyncio.create_task(w.run())
    try:
        await test(w, backend)
    finally:
        w.close()
        backend.gate.set()
        backend.fail_next = 0
        await asyncio.wait_for(task, 5)


async def test_writer_commits_everything_queued_meanwhile_in_one_transaction() -> None:
    async def body(w: GroupCommitWriter, b: _RecordingBackend) -> None:
        first = w.submit(_cs(1))
        await asyncio.wait_for(b.entered.wait(), 5)  # the writer holds the first one
        marks = [w.submit(_cs(10)) for _ in range(50)]
        b.gate.set()
        assert await w.wait_durable(first, 5)
        assert await w.wait_durable(marks[-1], 5)
        assert len(b.batches) == 2
        assert len(b.batches[1]) == 500

    await _run_writer(body)


async def test_persisted_waiters_are_released_only_after_their_commit() -> None:
    async def body(w: GroupCommitWriter, b: _RecordingBackend) -> None:
        mark = w.submit(_cs(3))
        assert not await w.wait_durable(mark, 0.05)
        b.gate.set()
        assert await w.wait_durable(mark, 5)

    await _run_writer(body)


async def test_writer_retries_a_failed_commit_and_loses_nothing() -> None:
    async def body(w: GroupCommitWriter, b: _RecordingBackend) -> None:
        b.fail_next = 2
        mark = w.submit(_cs(4))
        b.gate.set()
        assert await w.wait_durable(mark, 10)
        assert sum(len(x) for x in b.batches) == 4

    await _run_writer(body)


async def test_a_lingering_writer_gathers_a_trickle_of_writes_into_one_commit() -> None:
    async def body(w: GroupCommitWriter, b: _RecordingBackend) -> None:
        b.gate.set()
        for _ in range(5):
            w.submit(_cs(1))
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        assert [len(x) for x in b.batches] == [5]

    await _run_writer(body, linger_s=0.3)


async def test_a_persisted_waiter_cuts_the_linger_short() -> None:
    async def body(w: GroupCommitWriter, b: _RecordingBackend) -> None:
        b.gate.set()
        mark = w.submit(_cs(2))
        t0 = time.perf_counter()
        assert await w.wait_durable(mark, 5)
        assert time.perf_counter() - t0 < 1.0  # not the 5 s linger

    await _run_writer(body, linger_s=5.0)


def test_unknown_storage_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown storage"):
        open_backend("mongodb://x", sqlite_path="x", pg_schema="x")


def test_storage_backend_null_selects_memory_and_the_dsn_env_selects_postgres() -> None:
    assert load_config([], env={"STORAGE_BACKEND": "null"}).storage == "memory"
    assert load_config([], env={"TOPGUN_STORAGE_DSN": PG_DSN}).storage == PG_DSN
    assert (
        load_config(["--storage", "sqlite"], env={"TOPGUN_STORAGE_DSN": PG_DSN}).storage == "sqlite"
    )
    assert load_config([], env={}).storage == "sqlite"
