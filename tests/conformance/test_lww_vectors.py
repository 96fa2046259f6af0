"""lww_merge.json: LWW map scenarios replayed step by step on real LwwMap replicas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from libs.crdt import HLC, LwwMap, LwwRecord, Timestamp, sort_keys_utf16

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "lww_merge.json").read_text("utf-8"))
SCENARIOS = {s["name"]: s for s in VECTORS["scenarios"]}


class ManualClock:
    def __init__(self) -> None:
        self.wall = 0

    def __call__(self) -> int:
        return self.wall


class Node:
    def __init__(self, node_id: str) -> None:
        self.clock = ManualClock()
        self.map = LwwMap(HLC(node_id, clock=self.clock))


def _run_step(nodes: dict[str, Node], step: dict[str, Any]) -> Any:
    node = nodes[step["node"]]
    node.clock.wall = step["wall"]
    m = node.map
    op = step["op"]
    if op == "set":
        return m.set(step["key"], step["value"], step.get("ttlMs")).to_wire()
    if op == "remove":
        return m.remove(step["key"]).to_wire()
    if op == "merge":
        return m.merge(step["key"], LwwRecord.from_wire(step["record"]))
    if op == "get":
        value = m.get(step["key"])
        return {"undefined": True} if value is None else value
    if op == "prune":
        return m.prune(Timestamp.from_wire(step["olderThan"]))
    if op == "sync_all_from":
        source = nodes[step["from"]].map.records()
        return {k: m.merge(k, source[k]) for k in sort_keys_utf16(source)}
    raise AssertionError(f"unknown op {op}")


def _replay(scenario: dict[str, Any]) -> None:
    nodes = {n: Node(n) for n in scenario["nodes"]}
    for i, step in enumerate(scenario["steps"]):
        where = f"step {i} ({step['node']} {step['op']})"
        assert _run_step(nodes, step) == step["returned"], where
        state = nodes[step["node"]].map.hlc.state
        assert (state.last_millis, state.last_counter) == (
            step["hlc_after"]["lastMillis"],
            step["hlc_after"]["lastCounter"],
        ), where
        assert nodes[step["node"]].map.merkle.root == step["merkle_root_after"], where
    last_wall = scenario["steps"][-1]["wall"]
    for name, final in scenario["final"].items():
        m = nodes[name].map
        assert {k: r.to_wire() for k, r in m.records().items()} == final["records"], name
        assert m.entries(now=last_wall) == final["visible"], name
        assert m.merkle.root == final["merkle_root"], name


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_lww_scenario(name: str) -> None:
    # Includes tie_locale_order_not_code_point: "B" beats "a" on a tie, as localeCompare ranks them.
    _replay(SCENARIOS[name])
