"""partition.json: a key's partition is fnv1a(key) % 271; the map name is not hashed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from libs.crdt import PARTITION_COUNT, fnv1a, hash_hex, partition_of, partitions_of

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "partition.json").read_text("utf-8"))
KEYS = VECTORS["keys"]


def test_partition_count_is_271() -> None:
    assert PARTITION_COUNT == VECTORS["partition_count"] == 271


@pytest.mark.parametrize(
    "case", KEYS, ids=[f"{i}-{ascii(c['key'])[1:25]}" for i, c in enumerate(KEYS)]
)
def test_partition_of_key(case: dict[str, Any]) -> None:
    assert fnv1a(case["key"]) == case["hash"]
    assert hash_hex(case["hash"]) == case["hex"]
    assert partition_of(case["key"]) == case["partition"]


def test_partitions_of_batch_equals_every_vector() -> None:
    got = partitions_of([c["key"] for c in KEYS])
    assert got.tolist() == [c["partition"] for c in KEYS]
