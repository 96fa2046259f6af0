"""pncounter.json: PN counter steps, merges in both wire spellings, and the {p, n} shape."""

from __future__ import annotations

import json
from pathlib import Path

import msgpack

from libs.crdt import PNCounter, state_from_wire

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "pncounter.json").read_text("utf-8"))


def test_pncounter_steps_and_final_state() -> None:
    counters = {"node-a": PNCounter("node-a"), "node-b": PNCounter("node-b")}
    for i, step in enumerate(VECTORS["steps"]):
        where = f"step {i} ({step['node']} {step['op']})"
        c = counters[step["node"]]
        op = step["op"]
        if op == "increment":
            got = c.increment()
        elif op == "decrement":
            got = c.decrement()
        elif op == "addAndGet":
            got = c.add_and_get(step["arg"])
        elif op == "merge_from":
            # As the TypeScript client sends it: {positive, negative}.
            wire = counters[step["arg"]].to_wire()
            c.merge({"positive": wire["positive"], "negative": wire["negative"]})
            got = c.value
        elif op == "merge_stale":
            # As TopGun's schema and Rust server write it: {p, n}.
            wire = counters[step["arg"]].to_wire()
            assert not c.merge({"p": wire["p"], "n": wire["n"]}), where
            got = c.value
        else:
            raise AssertionError(f"unknown op {op}")
        assert got == step["returned"], where
        assert c.positive == step["state_after"]["positive"], where
        assert c.negative == step["state_after"]["negative"], where
    final = VECTORS["final_node_a"]
    a = counters["node-a"]
    assert a.value == final["value"]
    assert a.to_wire()["positive"] == a.to_wire()["p"] == final["positive"]
    assert a.to_wire()["negative"] == a.to_wire()["n"] == final["negative"]


def test_core_serialized_state_reads_back_as_the_final_state() -> None:
    state = msgpack.unpackb(bytes.fromhex(VECTORS["core_serialize_hex"]), raw=False)
    assert set(state) == {"p", "n"}
    final = VECTORS["final_node_a"]
    assert state_from_wire(state) == (final["positive"], final["negative"])
    c = PNCounter.from_wire("node-a", state)
    assert c.value == final["value"]
    assert {"p": c.to_wire()["p"], "n": c.to_wire()["n"]} == state
