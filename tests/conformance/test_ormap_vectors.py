"""ormap_merge.json: OR-map entry hashes (exact hashed strings) and OR-map scenarios."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from libs.crdt import (
    HLC,
    OrMap,
    OrRecord,
    Timestamp,
    fnv1a,
    hash_or_entry,
    hash_or_record,
    or_entry_string,
    or_record_string,
)

VECTORS = json.loads(
    (Path(__file__).parents[1] / "vectors" / "ormap_merge.json").read_text("utf-8")
)
ENTRY_HASHES = VECTORS["entry_hashes"]


@pytest.mark.parametrize(
    "case",
    ENTRY_HASHES,
    ids=[f"{i}-{ascii(c['key'])[1:-1]}-{len(c['records'])}rec" for i, c in enumerate(ENTRY_HASHES)],
)
def test_or_entry_hash_and_hashed_string(case: dict[str, Any]) -> None:
    records = [OrRecord.from_wire(r) for r in case["records"]]
    assert or_entry_string(case["key"], records) == case["hashed_string"]
    assert hash_or_entry(case["key"], records) == case["entry_hash"]
    assert hash_or_entry(case["key"], {r.tag: r for r in records}) == case["entry_hash"]
    assert fnv1a(case["hashed_string"]) == case["entry_hash"]
    assert [or_record_string(r) for r in records] == case["record_strings"]
    assert [hash_or_record(r) for r in records] == case["record_hashes"]
    # The wire form survives a round trip, including an explicit ttlMs: null.
    assert [r.to_wire() for r in records] == case["records"]


# --- scenarios ---------------------------------------------------------------------------------


class ManualClock:
    def __init__(self) -> None:
        self.wall = 0

    def __call__(self) -> int:
        return self.wall


class Node:
    def __init__(self, node_id: str) -> None:
        self.clock = ManualClock()
        self.map = OrMap(HLC(node_id, clock=self.clock))


def _multiset(values: list[Any]) -> list[str]:
    return sorted(json.dumps(v, sort_keys=True) for v in values)


def _run_step(nodes: dict[str, Node], step: dict[str, Any]) -> Any:
    node = nodes[step["node"]]
    node.clock.wall = step["wall"]
    m = node.map
    op = step["op"]
    if op == "add":
        return m.add(step["key"], step["value"], step.get("ttlMs")).to_wire()
    if op == "remove":
        return m.remove(step["key"], step["value"])
    if op == "apply":
        return m.apply(step["key"], OrRecord.from_wire(step["record"]))
    if op == "applyTombstone":
        m.apply_tombstone(step["tag"])
        return None
    if op == "merge":
        m.merge(nodes[step["from"]].map)
        return None
    if op == "mergeKey":
        records = [OrRecord.from_wire(r) for r in step["records"]]
        added, updated = m.merge_key(step["key"], records, step["tombstones"])
        return {"added": added, "updated": updated}
    if op == "get":
        return m.get(step["key"])
    if op == "prune":
        return sorted(m.prune(Timestamp.from_wire(step["olderThan"])))
    raise AssertionError(f"unknown op {op}")


def _assert_state(m: OrMap, expected: dict[str, Any], where: str) -> None:
    items = {k: {t: r.to_wire() for t, r in recs.items()} for k, recs in m.all_records().items()}
    assert items == expected["items"], where
    assert sorted(m.tombstones) == expected["tombstones"], where
    visible = {k: _multiset(m.get(k)) for k in m}
    assert visible == {k: _multiset(v) for k, v in expected["visible_values"].items()}, where
    entries = {k: m.merkle.entry(k) for k in m}
    assert entries == expected["entry_hashes"], where
    for k, h in expected["entry_hashes"].items():
        assert hash_or_entry(k, m.records_map(k)) == h, where
    assert m.merkle.root == expected["merkle_root"], where


SCENARIOS = VECTORS["scenarios"]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["name"] for s in SCENARIOS])
def test_ormap_scenario(scenario: dict[str, Any]) -> None:
    nodes = {n: Node(n) for n in scenario["nodes"]}
    for i, step in enumerate(scenario["steps"]):
        where = f"step {i} ({step['node']} {step['op']})"
        returned = _run_step(nodes, step)
        if step["op"] == "get":
            assert _multiset(returned) == _multiset(step["returned"]), where
        else:
            assert returned == step["returned"], where
        state = nodes[step["node"]].map.hlc.state
        assert (state.last_millis, state.last_counter) == (
            step["hlc_after"]["lastMillis"],
            step["hlc_after"]["lastCounter"],
        ), where
        _assert_state(nodes[step["node"]].map, step["state_after"], where)
