"""Column batches: the tightest column kind per field, concatenation across kinds, the codec."""

from __future__ import annotations

import numpy as np

from libs.dag import MISSING, Batch, DictColumn, NumColumn, ObjColumn, build_column, concat_batches
from libs.dag.batch import concat_columns, no_keys
from libs.dag.codec import decode_batch, encode_batch, encode_batch_parts


def test_numbers_become_numeric_columns_and_remember_ints_and_nulls() -> None:
    col = build_column([1, 2, None, MISSING, 5])
    assert isinstance(col, NumColumn) and col.integral
    assert col.to_objects().tolist() == [1, 2, None, MISSING, 5]
    assert isinstance(build_column([1, 2.5]), NumColumn)
    assert not build_column([1, 2.5]).integral  # type: ignore[union-attr]


def test_strings_booleans_and_mixed_scalars_are_dictionary_encoded() -> None:
    for values in (["a", "b", "a", MISSING], [True, False, True], ["x", 1, True, None, 1.0]):
        col = build_column(values)
        assert isinstance(col, DictColumn)
        assert col.to_objects().tolist() == values
    mixed = build_column(["x", 1, True, 1.0])
    assert isinstance(mixed, DictColumn) and len(mixed.dictionary) == 3  # 1 == 1.0, True apart


def test_lists_maps_and_huge_integers_keep_their_exact_values() -> None:
    assert isinstance(build_column([[1], {"a": 2}, MISSING]), ObjColumn)
    big = build_column([2**60, 1])
    assert not isinstance(big, NumColumn) and big.to_objects().tolist() == [2**60, 1]


def test_concatenating_columns_of_different_kinds_keeps_every_value() -> None:
    parts = [build_column([1, 2]), build_column(["a", MISSING]), build_column([[3]])]
    assert concat_columns(parts).to_objects().tolist() == [1, 2, "a", MISSING, [3]]
    b = concat_batches(
        [Batch.from_records([("k1", {"x": 1})]), Batch.from_records([("k2", {"y": "z"})])]
    )
    assert list(b.rows()) == [("k1", {"x": 1}), ("k2", {"y": "z"})]


def test_the_codec_round_trips_every_column_kind() -> None:
    recs = [
        ("a", {"n": 1, "f": 0.5, "s": "x", "b": True, "o": [1, 2], "m": {"k": None}}),
        ("b", {"n": None, "s": "y", "b": False}),
        ("c", {"f": -2.25, "o": {"z": 1}}),
    ]
    batch = Batch.from_records(recs)
    again = decode_batch(encode_batch(batch))
    assert list(again.rows()) == list(batch.rows())
    assert {n: type(c) for n, c in again.columns.items()} == {
        n: type(c) for n, c in batch.columns.items()
    }


def test_a_batch_too_large_for_one_message_is_cut_into_row_ranges() -> None:
    batch = Batch.from_columns(
        [f"k{i}" for i in range(100)], {"v": [f"{i:03d}" + "x" * 1000 for i in range(100)]}
    )
    parts = encode_batch_parts(batch, max_bytes=20_000)
    assert len(parts) > 1 and all(len(p) <= 20_000 for p in parts)
    assert [k for p in parts for k, _ in decode_batch(p).rows()] == [f"k{i}" for i in range(100)]


def test_placeholder_keys_are_never_copied_by_take() -> None:
    b = Batch(no_keys(1000), {"v": build_column(list(range(1000)))})
    taken = b.take(np.flatnonzero(np.arange(1000) % 2 == 0))
    assert len(taken) == 500 and taken.keys.base is b.keys.base
