"""Query-language hot paths: compiled filters per row, one-shot evaluate, live-window changes,
GROUP BY accumulation. Prints one JSON object; medians of 3 runs.

    .venv/bin/python bench/query_bench.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from libs.query import (
    GroupAccumulator,
    LiveQuery,
    compile_filter,
    evaluate,
    parse_query,
)

RUNS = 3
CALLS = 200_000
NOW = 1_700_000_000_000

FILTERS: dict[str, dict[str, Any]] = {
    "eq_str": {"op": "eq", "attribute": "cat", "value": "c3"},
    "eq_num": {"op": "eq", "attribute": "price", "value": 150},
    "gt_num": {"op": "gt", "attribute": "price", "value": 100},
    "and_gt_eq": {
        "op": "and",
        "children": [
            {"op": "gt", "attribute": "price", "value": 100},
            {"op": "eq", "attribute": "cat", "value": "c3"},
        ],
    },
    "in_5_strings": {"op": "in", "attribute": "cat", "value": ["c1", "c3", "c5", "c7", "c9"]},
    "nested_gt": {"op": "gt", "attribute": "address.zip", "value": 5000},
    "like": {"op": "like", "attribute": "name", "value": "item-1%"},
    "key_in": {"op": "in", "attribute": "_key", "value": ["k-1", "k-2", "k-3"]},
}


def _median(fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_rows(n: int, seed: int = 7) -> list[tuple[str, dict[str, Any]]]:
    rnd = random.Random(seed)
    return [
        (
            f"k-{i}",
            {
                "name": f"item-{i}",
                "price": rnd.randint(0, 300),
                "cat": f"c{rnd.randint(0, 9)}",
                "stock": rnd.random() * 10,
                "address": {"city": "Oslo", "zip": rnd.randint(0, 9999)},
            },
        )
        for i in range(n)
    ]


def bench_filters(rows: list[tuple[str, dict[str, Any]]]) -> dict[str, float]:
    out: dict[str, float] = {}
    value = rows[0][1]
    for name, node in FILTERS.items():
        f = compile_filter(node)
        per_call = _median(lambda f=f: [f("k-0", value) for _ in range(CALLS)]) / CALLS
        scan = _median(lambda f=f: [k for k, v in rows if f(k, v)]) / len(rows)
        out[f"{name}_ns_per_call"] = round(per_call * 1e9, 1)
        out[f"{name}_ns_per_row_in_scan"] = round(scan * 1e9, 1)
    baseline = _median(lambda: [k for k, v in rows if True]) / len(rows)
    out["empty_scan_loop_ns_per_row"] = round(baseline * 1e9, 1)
    return out


def bench_evaluate(rows: list[tuple[str, dict[str, Any]]]) -> dict[str, float]:
    top = parse_query(
        {
            "predicate": FILTERS["gt_num"],
            "sort": [{"field": "price", "direction": "desc"}],
            "limit": 100,
        },
        ["name", "price"],
    )
    full_sort = parse_query({"predicate": FILTERS["gt_num"], "sort": {"stock": "asc"}})
    grouped = parse_query({"groupBy": ["cat"], "aggregations": [{"func": "sum", "field": "price"}]})
    n = len(rows)
    return {
        "top100_sorted_rows_per_s": round(n / _median(lambda: evaluate(top, rows, now_ms=NOW))),
        "full_sort_rows_per_s": round(n / _median(lambda: evaluate(full_sort, rows, now_ms=NOW))),
        "group_by_sum_rows_per_s": round(n / _median(lambda: evaluate(grouped, rows))),
    }


def bench_live(rows: list[tuple[str, dict[str, Any]]]) -> dict[str, float]:
    rnd = random.Random(11)
    changes = [
        (f"k-{rnd.randrange(len(rows))}", {"price": rnd.randint(0, 300), "cat": "c1", "stock": 1.0})
        for _ in range(20_000)
    ]
    out: dict[str, float] = {}
    for label, body in (
        ("bounded_top100", {"sort": {"price": "desc"}, "limit": 100}),
        ("unbounded_filtered", {"predicate": FILTERS["gt_num"]}),
        ("grouped_sum", {"groupBy": ["cat"], "aggregations": [{"func": "sum", "field": "price"}]}),
    ):
        query = parse_query(body)
        subset = changes if label != "grouped_sum" else changes[:2_000]

        def run(query: Any = query, subset: list[Any] = subset) -> None:
            lq = LiveQuery(query, rows, now_ms=NOW, reserve=10_000)
            start = time.perf_counter()
            for key, value in subset:
                lq.apply_change(key, value)
            run.elapsed = time.perf_counter() - start  # type: ignore[attr-defined]

        times = []
        for _ in range(RUNS):
            run()
            times.append(run.elapsed)  # type: ignore[attr-defined]
        out[f"{label}_us_per_change"] = round(statistics.median(times) / len(subset) * 1e6, 2)
    return out


def bench_accumulator(rows: list[tuple[str, dict[str, Any]]]) -> dict[str, float]:
    query = parse_query(
        {
            "groupBy": ["cat"],
            "aggregations": [{"func": f, "field": "stock"} for f in ("sum", "min", "max", "avg")],
        }
    )

    def run() -> None:
        GroupAccumulator(query.group_by, query.aggregations).add_all(rows).result()

    return {"group_add_4_aggs_rows_per_s": round(len(rows) / _median(run))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    rows = make_rows(args.rows)
    report: dict[str, Any] = {"rows": args.rows}
    report["filter"] = bench_filters(rows)
    report["evaluate"] = bench_evaluate(rows)
    report["live"] = bench_live(rows)
    report["accumulate"] = bench_accumulator(rows)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
