"""Each processor family on its own: lists in, lists out, through an outbox of one item."""

from __future__ import annotations

import msgpack
import pytest

from libs.dag import (
    VALUE_COLUMN,
    AfterP,
    AggMode,
    AggregateP,
    AggSpec,
    Batch,
    BatchesSource,
    CollectSinkP,
    DistinctP,
    FilterP,
    ForwardP,
    HashJoinP,
    LimitP,
    MapP,
    ProjectP,
    RecordsSource,
    SortKey,
    SortP,
    SourceP,
    TopNP,
    compile_batch_filter,
    concat_batches,
)
from libs.dag.harness import run_processor
from libs.query.aggregate import GroupAccumulator
from libs.query.model import Aggregation

PEOPLE = [
    ("p1", {"name": "ann", "age": 31, "city": "oslo", "score": 1.5}),
    ("p2", {"name": "bob", "age": 25, "city": "rome", "score": 2.5}),
    ("p3", {"name": "cid", "age": 40, "city": "oslo"}),
    ("p4", {"name": "dan", "age": None, "city": "rome", "score": -1.0}),
    ("p5", {"name": "eve", "age": 31, "score": 4.0}),
    ("p6", {"name": "fay", "age": 19, "city": "oslo", "score": 0.5}),
]


def rows(batches: list[Batch]) -> list[tuple[str, dict]]:
    return [r for b in batches for r in b.rows()]


def people_batches(size: int = 2, fields=("name", "age", "city", "score")) -> list[Batch]:
    return [
        Batch.from_records(PEOPLE[i : i + size], list(fields)) for i in range(0, len(PEOPLE), size)
    ]


def test_source_pushes_the_filter_down_and_emits_only_requested_columns() -> None:
    flt = compile_batch_filter({"op": "gte", "attribute": "age", "value": 31})
    src = SourceP(RecordsSource(PEOPLE), ["name"], flt, batch_rows=2)
    out = run_processor(src)
    assert rows(out) == [("p1", {"name": "ann"}), ("p3", {"name": "cid"}), ("p5", {"name": "eve"})]
    assert all(b.names == ("name",) for b in out)
    assert src.rows_scanned == len(PEOPLE)


def test_source_value_column_holds_each_record_as_msgpack() -> None:
    out = run_processor(SourceP(RecordsSource(PEOPLE[:2]), [VALUE_COLUMN]))
    values = [msgpack.unpackb(v) for v in out[0].column(VALUE_COLUMN).to_objects()]
    assert values == [PEOPLE[0][1], PEOPLE[1][1]]


def test_filter_keeps_matching_rows_across_batches() -> None:
    flt = compile_batch_filter({"op": "eq", "attribute": "city", "value": "oslo"})
    out = run_processor(FilterP(flt), people_batches())
    assert [k for k, _ in rows(out)] == ["p1", "p3", "p6"]


def test_project_keeps_renames_and_orders_columns() -> None:
    out = run_processor(ProjectP(["city", "name"], {"name": "who"}), people_batches(3))
    assert out[0].names == ("city", "who")
    assert rows(out)[4] == ("p5", {"who": "eve"})


def test_map_applies_a_batch_function_and_drops_empty_results() -> None:
    out = run_processor(MapP(lambda b: b.take(slice(0, 1))), people_batches(2))
    assert [k for k, _ in rows(out)] == ["p1", "p3", "p5"]


def _reference_groups(group_by, aggs):
    acc = GroupAccumulator(group_by, [Aggregation(a.func, a.field) for a in aggs])
    return acc.add_all(PEOPLE).result()


@pytest.mark.parametrize("group_by", [["city"], ["city", "age"], ["age"]])
def test_aggregate_partial_then_final_equals_group_accumulator(group_by) -> None:
    aggs = [
        AggSpec("sum", "score"),
        AggSpec("min", "age"),
        AggSpec("max", "score"),
        AggSpec("avg", "age"),
    ]
    partials = [
        s
        for part in (people_batches(2)[:2], people_batches(2)[2:])
        for s in run_processor(AggregateP(group_by, aggs, AggMode.PARTIAL), part)
    ]
    combined = run_processor(AggregateP(group_by, aggs, AggMode.COMBINE), partials)
    final = run_processor(AggregateP(group_by, aggs, AggMode.FINAL), combined)
    assert rows(final) == _reference_groups(group_by, aggs)


def test_aggregate_complete_without_group_by_is_one_global_row() -> None:
    aggs = [AggSpec("count"), AggSpec("sum", "age"), AggSpec("count_distinct", "city")]
    out = run_processor(AggregateP([], aggs, AggMode.COMPLETE), people_batches(4))
    assert rows(out) == [
        ("", {"__key": "", "__count": 6, "__sum_age": 146, "__count_distinct_city": 2})
    ]


def test_aggregate_over_no_rows_counts_zero_globally_and_has_no_groups() -> None:
    aggs = [AggSpec("count"), AggSpec("avg", "age")]
    assert rows(run_processor(AggregateP([], aggs, AggMode.COMPLETE), [])) == [
        ("", {"__key": "", "__count": 0, "__avg_age": None})
    ]
    assert run_processor(AggregateP(["city"], aggs, AggMode.COMPLETE), []) == []


def test_aggregate_count_distinct_merges_partials() -> None:
    aggs = [AggSpec("count_distinct", "age")]
    parts = [
        run_processor(AggregateP(["city"], aggs, AggMode.PARTIAL), [b]) for b in people_batches(2)
    ]
    final = run_processor(AggregateP(["city"], aggs, AggMode.FINAL), [s for p in parts for s in p])
    by_city = {v["city"]: v["__count_distinct_age"] for _, v in rows(final)}
    assert by_city == {"oslo": 3, "rome": 1, None: 1}


def test_sort_orders_by_fields_then_key_with_nulls_last() -> None:
    out = run_processor(SortP([SortKey("age")], chunk_rows=4), people_batches(2))
    assert [k for k, _ in rows(out)] == ["p6", "p2", "p1", "p5", "p3", "p4"]
    assert [len(b) for b in out] == [4, 2]


def test_sort_descending_puts_nulls_first() -> None:
    out = run_processor(SortP([SortKey("score", descending=True)]), people_batches(2))
    assert [k for k, _ in rows(out)] == ["p3", "p5", "p2", "p1", "p6", "p4"]


def test_topn_keeps_the_best_rows_over_many_batches() -> None:
    out = run_processor(TopNP([SortKey("city"), SortKey("age", True)], 3), people_batches(1))
    assert [k for k, _ in rows(out)] == ["p3", "p1", "p6"]


def test_topn_on_large_batches_uses_the_leading_field_cut_and_keeps_ties() -> None:
    recs = [(f"k{i:05d}", {"v": i % 7}) for i in range(5000)]
    out = run_processor(TopNP([SortKey("v", True)], 10), [Batch.from_records(recs)])
    expected = sorted(recs, key=lambda r: (-r[1]["v"], r[0]))[:10]
    assert rows(out) == expected


def test_limit_passes_offset_then_n_rows() -> None:
    out = run_processor(LimitP(3, offset=2), people_batches(2))
    assert [k for k, _ in rows(out)] == ["p3", "p4", "p5"]


def test_after_drops_rows_up_to_and_including_the_cursor_position() -> None:
    out = run_processor(AfterP([SortKey("age")], [31], "p1"), people_batches(3))
    assert sorted(k for k, _ in rows(out)) == ["p3", "p4", "p5"]


def test_distinct_keeps_the_first_row_of_each_combination() -> None:
    out = run_processor(DistinctP(["city"]), people_batches(2))
    assert [k for k, _ in rows(out)] == ["p1", "p2", "p5"]
    out = run_processor(DistinctP(["age"]), people_batches(2))
    assert [k for k, _ in rows(out)] == ["p1", "p2", "p3", "p4", "p6"]


def test_hash_join_matches_build_and_probe_rows_on_a_field() -> None:
    cities = Batch.from_records(
        [("c1", {"name": "oslo", "country": "no"}), ("c2", {"name": "rome", "country": "it"})]
    )
    out = run_processor(HashJoinP("name", "city", "c.", "p."), {0: [cities], 1: people_batches(2)})
    joined = sorted((v["p._key"], v["c.country"]) for _, v in rows(out))
    assert joined == [("p1", "no"), ("p2", "it"), ("p3", "no"), ("p4", "it"), ("p6", "no")]


def test_collect_sink_and_forward_pass_batches_unchanged() -> None:
    got: list[Batch] = []
    batches = people_batches(2)
    run_processor(CollectSinkP(got), batches)
    assert got == batches
    assert run_processor(ForwardP(), batches) == batches


def test_batches_source_replays_and_fills_missing_columns() -> None:
    out = run_processor(SourceP(BatchesSource(people_batches(3, ("name",))), ["name", "age"]))
    b = concat_batches(out)
    assert b.names == ("name", "age")
    assert dict(b.rows())["p1"] == {"name": "ann"}
