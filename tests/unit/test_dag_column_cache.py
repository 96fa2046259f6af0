"""The storage node's column cache: a chunk patched with a partition's changes holds exactly
what a chunk rebuilt from scratch would, and a scan sees every write made before it."""

from __future__ import annotations

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.crdt.hashing import partition_of
from libs.dag import VALUE_COLUMN
from services.storage.columns import ColumnCache
from services.storage.partition_store import PartitionStore

MAP = "m"
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-50, 50),
    st.floats(-10, 10, allow_nan=False),
    st.sampled_from(["a", "b", "c"]),
    st.lists(st.integers(0, 3), max_size=2),
)
records = st.dictionaries(st.sampled_from(["x", "y", "z"]), values, max_size=3)


class Writer:
    def __init__(self) -> None:
        self.store = PartitionStore()
        self.seq = 0

    def put(self, key: str, value: object, ttl_ms: int = 0) -> None:
        self._write(key, msgpack.packb(value), ttl_ms)

    def remove(self, key: str) -> None:
        self._write(key, b"", 0)

    def _write(self, key: str, raw: bytes, ttl_ms: int) -> None:
        self.seq += 1
        self.store.load_lww(
            MAP,
            [key],
            [partition_of(key)],
            [1000 + self.seq],
            [0],
            ["w"],
            [raw],
            [ttl_ms],
            [self.seq],
        )


def scan_rows(cache: ColumnCache, fields: list[str]) -> dict[str, dict]:
    src = cache.source(MAP, list(range(271)), now_ms=0)
    out = {}
    for batch in src.scan(fields, batch_rows=1000):
        if batch is not None:
            out.update(batch.rows())
    return out


# keys that share one partition, so the edits land on one chunk and patch it
KEYS = [k for k in (f"k{i}" for i in range(4000)) if partition_of(k) == partition_of("k0")][:12]


@settings(max_examples=60, deadline=None)
@given(
    base=st.lists(records, min_size=1, max_size=12),
    edits=st.lists(st.tuples(st.sampled_from(KEYS), st.one_of(st.none(), records)), max_size=10),
)
def test_a_patched_chunk_equals_a_rebuilt_one(base, edits) -> None:
    w = Writer()
    for key, rec in zip(KEYS, base, strict=False):
        w.put(key, rec)
    cache = ColumnCache(w.store)
    fields = ["x", "y", "z", VALUE_COLUMN]
    scan_rows(cache, fields)
    for key, rec in edits:
        if rec is None:
            w.remove(key)
        else:
            w.put(key, rec)
    patched = scan_rows(cache, fields)
    rebuilt = scan_rows(ColumnCache(w.store), fields)
    assert patched == rebuilt


def test_few_changes_are_patched_without_decoding_the_partition_again() -> None:
    w = Writer()
    for i, key in enumerate(KEYS):
        w.put(key, {"x": i, "y": "a"})
    cache = ColumnCache(w.store)
    assert sorted(scan_rows(cache, ["x"]).items())[0][1] == {"x": 0}
    decoded = cache.rows_decoded
    w.put(KEYS[0], {"x": 100, "y": "b"})
    w.remove(KEYS[1])
    w.put("new-key", {"x": 7})
    rows = scan_rows(cache, ["x", "y"])
    assert rows[KEYS[0]] == {"x": 100, "y": "b"} and KEYS[1] not in rows
    assert rows["new-key"] == {"x": 7}
    assert cache.rows_patched >= 2
    assert cache.rows_decoded - decoded <= 1  # only the new key's partition was built
