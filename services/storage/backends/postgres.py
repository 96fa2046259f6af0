"""PostgreSQL through asyncpg, chosen with a ``postgresql://`` DSN.

Each node keeps its tables in its own schema (created on first start). A write is one
transaction: the batch's rows are COPYed into temporary staging tables and moved into the real
tables with one ``INSERT ... ON CONFLICT DO UPDATE`` per table. Rows are de-duplicated by key
first (the newest state wins), since one upsert may not touch a row twice.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from services.storage.backends import (
    CountersChunk,
    LoadChunk,
    LwwChunk,
    MapsChunk,
    OrChunk,
    WriteBatch,
    has_or,
    lww_rows,
    or_rows,
)

log = logging.getLogger(__name__)

CHUNK_ROWS = 50_000
CONNECT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 60.0

_LWW_COLS = "map, key, partition, millis, counter, node_id, value, ttl_ms, seq"
_OR_COLS = "map, key, tag, partition, value, millis, counter, node_id, ttl_ms, seq"
_TOMB_COLS = "map, key, tag, partition, millis, counter, node_id, seq"


def safe_schema(name: str) -> str:
    """A schema name made only of lowercase letters, digits and underscores."""
    s = re.sub(r"[^a-z0-9_]", "_", name.lower())
    return s if s and not s[0].isdigit() else f"s_{s}"


def _schema_sql(schema: str) -> str:
    return f"""
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.maps (name TEXT PRIMARY KEY, kind INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS {schema}.lww (
    map TEXT NOT NULL, key TEXT NOT NULL, partition INTEGER NOT NULL,
    millis BIGINT NOT NULL, counter BIGINT NOT NULL, node_id TEXT NOT NULL,
    value BYTEA NOT NULL, ttl_ms BIGINT NOT NULL, seq BIGINT NOT NULL,
    PRIMARY KEY (map, key));
CREATE TABLE IF NOT EXISTS {schema}.or_records (
    map TEXT NOT NULL, key TEXT NOT NULL, tag TEXT NOT NULL, partition INTEGER NOT NULL,
    value BYTEA NOT NULL, millis BIGINT NOT NULL, counter BIGINT NOT NULL,
    node_id TEXT NOT NULL, ttl_ms BIGINT NOT NULL, seq BIGINT NOT NULL,
    PRIMARY KEY (map, key, tag));
CREATE TABLE IF NOT EXISTS {schema}.or_tombstones (
    map TEXT NOT NULL, key TEXT NOT NULL, tag TEXT NOT NULL, partition INTEGER NOT NULL,
    millis BIGINT NOT NULL, counter BIGINT NOT NULL, node_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (map, key, tag));
CREATE TABLE IF NOT EXISTS {schema}.counters (name TEXT PRIMARY KEY, state BYTEA NOT NULL);
"""


def _staging_sql(schema: str) -> str:
    return f"""
CREATE TEMP TABLE IF NOT EXISTS stage_lww (LIKE {schema}.lww) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_or (LIKE {schema}.or_records) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_tomb (LIKE {schema}.or_tombstones) ON COMMIT DELETE ROWS;
"""


class PostgresBackend:
    name = "postgres"

    def __init__(self, dsn: str, *, schema: str) -> None:
        self.dsn = dsn
        self.schema = safe_schema(schema)
        self._conn: asyncpg.Connection | None = None

    @property
    def conn(self) -> asyncpg.Connection:
        if self._conn is None:
            raise RuntimeError("postgres backend is not open")
        return self._conn

    async def open(self) -> None:
        self._conn = await asyncpg.connect(
            self.dsn, timeout=CONNECT_TIMEOUT_S, command_timeout=COMMAND_TIMEOUT_S
        )
        await self._conn.execute(_schema_sql(self.schema))
        await self._conn.execute(_staging_sql(self.schema))
        log.info("postgres store open (schema %s)", self.schema)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close(timeout=CONNECT_TIMEOUT_S)
            self._conn = None

    async def load(self) -> AsyncIterator[LoadChunk]:
        s = self.schema
        conn = self.conn
        maps = await conn.fetch(f"SELECT name, kind FROM {s}.maps")
        yield MapsChunk([(r[0], r[1]) for r in maps])
        async with conn.transaction():
            cur = await conn.cursor(f"SELECT {_LWW_COLS} FROM {s}.lww ORDER BY map")
            while True:
                rows = await cur.fetch(CHUNK_ROWS)
                if not rows:
                    break
                by_map: dict[str, list[Any]] = {}
                for r in rows:
                    by_map.setdefault(r[0], []).append(r)
                for name, rs in by_map.items():
                    _, keys, parts, millis, counters, nodes, values, ttls, seqs = zip(
                        *rs, strict=True
                    )
                    yield LwwChunk(
                        name,
                        list(keys),
                        list(parts),
                        list(millis),
                        list(counters),
                        list(nodes),
                        list(values),
                        list(ttls),
                        list(seqs),
                    )
            cur = await conn.cursor(f"SELECT {_OR_COLS} FROM {s}.or_records ORDER BY map")
            while True:
                rows = await cur.fetch(CHUNK_ROWS)
                if not rows:
                    break
                chunks: dict[str, OrChunk] = {}
                for m, k, t, p, v, ms, c, n, ttl, sq in rows:
                    ch = chunks.get(m)
                    if ch is None:
                        ch = chunks[m] = OrChunk(m)
                    ch.records.append((k, p, t, v, ms, c, n, ttl, sq))
                for ch in chunks.values():
                    yield ch
            cur = await conn.cursor(f"SELECT {_TOMB_COLS} FROM {s}.or_tombstones ORDER BY map")
            while True:
                rows = await cur.fetch(CHUNK_ROWS)
                if not rows:
                    break
                chunks = {}
                for m, k, t, p, ms, c, n, sq in rows:
                    ch = chunks.get(m)
                    if ch is None:
                        ch = chunks[m] = OrChunk(m)
                    ch.tombstones.append((k, p, t, ms, c, n, sq))
                for ch in chunks.values():
                    yield ch
        counters = await conn.fetch(f"SELECT name, state FROM {s}.counters")
        yield CountersChunk([(r[0], r[1]) for r in counters])

    async def write(self, batch: WriteBatch) -> None:
        s = self.schema
        lww: dict[tuple[str, str], tuple[Any, ...]] = {}
        adds: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        tombs: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        for cs in batch.changes:
            for r in lww_rows(cs):
                lww[(r[0], r[1])] = r
            if has_or(cs):
                a, t = or_rows(cs)
                for ar in a:
                    adds[(ar[0], ar[1], ar[2])] = ar
                for tr in t:
                    tombs[(tr[0], tr[1], tr[2])] = tr
                    adds.pop((tr[0], tr[1], tr[2]), None)
        conn = self.conn
        async with conn.transaction():
            if batch.maps:
                await conn.executemany(
                    f"INSERT INTO {s}.maps VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                    list(batch.maps),
                )
            if lww:
                await conn.copy_records_to_table("stage_lww", records=list(lww.values()))
                await conn.execute(
                    f"INSERT INTO {s}.lww SELECT * FROM stage_lww ON CONFLICT (map, key) DO UPDATE"
                    " SET partition = EXCLUDED.partition, millis = EXCLUDED.millis,"
                    " counter = EXCLUDED.counter, node_id = EXCLUDED.node_id,"
                    " value = EXCLUDED.value, ttl_ms = EXCLUDED.ttl_ms, seq = EXCLUDED.seq"
                )
            if adds:
                await conn.copy_records_to_table("stage_or", records=list(adds.values()))
                await conn.execute(
                    f"INSERT INTO {s}.or_records SELECT * FROM stage_or"
                    " ON CONFLICT (map, key, tag) DO UPDATE"
                    " SET partition = EXCLUDED.partition, value = EXCLUDED.value,"
                    " millis = EXCLUDED.millis, counter = EXCLUDED.counter,"
                    " node_id = EXCLUDED.node_id, ttl_ms = EXCLUDED.ttl_ms, seq = EXCLUDED.seq"
                )
            if tombs:
                await conn.copy_records_to_table("stage_tomb", records=list(tombs.values()))
                await conn.execute(
                    f"INSERT INTO {s}.or_tombstones SELECT * FROM stage_tomb"
                    " ON CONFLICT (map, key, tag) DO UPDATE"
                    " SET partition = EXCLUDED.partition, millis = EXCLUDED.millis,"
                    " counter = EXCLUDED.counter, node_id = EXCLUDED.node_id, seq = EXCLUDED.seq"
                )
                await conn.execute(
                    f"DELETE FROM {s}.or_records r USING stage_tomb t"
                    " WHERE r.map = t.map AND r.key = t.key AND r.tag = t.tag"
                )
            if batch.counters:
                await conn.executemany(
                    f"INSERT INTO {s}.counters VALUES ($1, $2)"
                    " ON CONFLICT (name) DO UPDATE SET state = EXCLUDED.state",
                    list(batch.counters),
                )

    async def drop_schema(self) -> None:
        """Remove this node's schema and everything in it (tests)."""
        await self.conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
