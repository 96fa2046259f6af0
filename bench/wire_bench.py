"""Cost of the client wire path for an OP_BATCH of 100 ops: decode (with the depth check),
parse into typed ops, and encode of server frames. Prints JSON; medians of several runs.

    .venv/bin/python bench/wire_bench.py [--ops 100] [--repeat 7]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import msgpack

from libs.wire import decode, encode, encode_js, parse_message, query_update, server_event
from libs.wire.codec import check_depth


def sdk_op(i: int) -> dict[str, Any]:
    """An op as the TypeScript SDK sends it inside OP_BATCH (PROTOCOL.md 4.1)."""
    ts = {"millis": 1723456789012 + i, "counter": 0, "nodeId": "c0ffee"}
    return {
        "id": str(i + 1),
        "mapName": "todos",
        "opType": "PUT",
        "key": f"todo-{i}",
        "record": {"value": {"title": "Buy milk", "done": False}, "timestamp": ts},
        "timestamp": ts,
        "synced": False,
    }


def rich_op(i: int) -> dict[str, Any]:
    """The richer op of the msgpack vectors' client session (nested value, list, float)."""
    ts = {"millis": 1700000000100 + i, "counter": 0, "nodeId": "client-a"}
    value = {
        "name": "Alice",
        "age": 30,
        "score": 1.5,
        "tags": ["a", "b"],
        "active": True,
        "nested": {"z": 1, "a": None},
    }
    return {
        "mapName": "users",
        "opType": "PUT",
        "key": f"user-{i}",
        "record": {"value": value, "timestamp": ts},
        "timestamp": ts,
        "synced": False,
        "id": str(i + 1),
    }


def per_call(fn: Callable[[], object], repeat: int, min_time: float = 0.05) -> float:
    """Median CPU seconds per call over ``repeat`` runs of at least ``min_time`` each.

    CPU time (``process_time``), not wall time: the machine is shared, and a process waiting
    for a core is not doing wire work."""
    clock = time.process_time
    gc.collect()
    n = 1
    while True:
        t0 = clock()
        for _ in range(n):
            fn()
        if clock() - t0 >= min_time:
            break
        n *= 2
    for _ in range(n):  # warm-up at the measured size
        fn()
    samples = []
    for _ in range(repeat):
        t0 = clock()
        for _ in range(n):
            fn()
        samples.append((clock() - t0) / n)
    return statistics.median(samples)


def measure(
    name: str, make_op: Callable[[int], dict[str, Any]], ops: int, repeat: int
) -> dict[str, Any]:
    msg = {"type": "OP_BATCH", "payload": {"ops": [make_op(i) for i in range(ops)]}}
    frame = encode_js(msg)
    decoded = decode(frame)

    def raw_unpack() -> object:
        return msgpack.unpackb(
            frame, raw=False, strict_map_key=False, unicode_errors="surrogatepass"
        )

    t_unpack = per_call(raw_unpack, repeat)
    t_check = per_call(lambda: check_depth(frame), repeat)
    t_decode = per_call(lambda: decode(frame), repeat)
    t_parse = per_call(lambda: parse_message(decoded), repeat)
    t_both = per_call(lambda: parse_message(decode(frame)), repeat)
    t_encode = per_call(lambda: encode(msg), repeat)
    us = 1e6 / ops
    return {
        "op_shape": name,
        "ops_per_batch": ops,
        "frame_bytes": len(frame),
        "msgpack_unpackb_us_per_op": round(t_unpack * us, 3),
        "depth_check_us_per_op": round(t_check * us, 3),
        "decode_us_per_op": round(t_decode * us, 3),
        "parse_us_per_op": round(t_parse * us, 3),
        "decode_and_parse_us_per_op": round(t_both * us, 3),
        "decode_ops_per_s": round(ops / t_decode),
        "decode_and_parse_ops_per_s": round(ops / t_both),
        "encode_ops_per_s": round(ops / t_encode),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()

    small = encode_js({"type": "PING", "timestamp": 1723456789012})
    event = server_event(
        "todos",
        "PUT",
        "t1",
        record={
            "value": {"title": "Buy milk"},
            "timestamp": {"millis": 1723456789012, "counter": 0, "nodeId": "c0ffee"},
        },
    )
    update = query_update("q1", "t1", {"title": "Buy milk"}, "UPDATE")
    out = {
        "timer": "process_time (CPU), median of --repeat runs",
        "batches": [
            measure("sdk_example", sdk_op, args.ops, args.repeat),
            measure("vector_rich", rich_op, args.ops, args.repeat),
        ],
        "ping_decode_us": round(per_call(lambda: decode(small), args.repeat) * 1e6, 3),
        "server_event_encode_us": round(per_call(lambda: encode(event), args.repeat) * 1e6, 3),
        "query_update_build_and_encode_us": round(
            per_call(
                lambda: encode(query_update("q1", "t1", {"title": "Buy milk"}, "UPDATE")),
                args.repeat,
            )
            * 1e6,
            3,
        ),
        "query_update_encode_js_us": round(
            per_call(lambda: encode_js(update), args.repeat) * 1e6, 3
        ),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
