"""The index write path: the key filter that lets an upsert of a new key skip its delete never
forgets a key (a key it says is absent has no document), MapIndex keeps one document per key
through reopening and refilling, documents held back for a burst keep their order against
deletes, and the one-pass field extraction gives the same texts as the general one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from services.search.index import ADD_BURST, MapIndex
from services.search.keyfilter import MIN_BITS, KeyFilter
from services.search.mapspec import MapSpec


def pack(v: Any) -> bytes:
    return msgpack.packb(v, use_bin_type=True)


def count_of(idx: MapIndex, key: str) -> int:
    return int(idx._searcher.doc_freq("_key", key))


@given(st.lists(st.text(max_size=12), max_size=300))
def test_filter_never_forgets_a_key_it_was_told_of(added: list[str]) -> None:
    f = KeyFilter()
    for k in added:
        f.add(k)
    assert all(k in f for k in added)
    assert all(f.add(k) for k in added)  # a second add reports "may be there"


def test_filter_of_a_new_key_says_absent_and_rarely_errs() -> None:
    f = KeyFilter.of((f"k{i}" for i in range(10_000)), 10_000)
    false_positives = sum(f"other{i}" in f for i in range(10_000))
    assert false_positives < 200
    assert not f.full


def test_filter_is_full_once_it_took_more_keys_than_its_capacity() -> None:
    f = KeyFilter()
    assert f.capacity == MIN_BITS // 24
    i = 0
    while not f.full:
        f.add(f"k{i}")
        i += 1
    assert f.count == f.capacity + 1 and i > f.capacity


def test_upsert_of_a_key_indexed_before_reopening_replaces_it(tmp_path: Path) -> None:
    idx = MapIndex("m", MapSpec(), tmp_path / "m")
    for i in range(50):
        idx.upsert(f"k{i}", pack({"t": f"old {i}"}))
    idx.commit()
    idx.close()
    again = MapIndex("m", MapSpec(), tmp_path / "m")
    for i in range(50):
        again.upsert(f"k{i}", pack({"t": f"new {i}"}))
    again.upsert("fresh", pack({"t": "new"}))
    again.commit()
    assert again.num_docs == 51
    assert all(count_of(again, f"k{i}") == 1 for i in range(50))


def test_delete_then_upsert_in_one_commit_leaves_one_document() -> None:
    idx = MapIndex("m", MapSpec())
    idx.upsert("a", pack({"t": "one"}))
    idx.delete("a")
    idx.upsert("a", pack({"t": "two"}))
    idx.commit()
    assert idx.num_docs == 1
    assert msgpack.unpackb(idx.stored_value("a") or b"") == {"t": "two"}


def test_a_full_filter_is_refilled_larger_at_commit_and_keeps_every_key() -> None:
    idx = MapIndex("m", MapSpec())
    first = idx._keys
    assert first is not None
    n = 0
    while not first.full:
        idx.upsert(f"k{n}", pack({"n": n}))
        n += 1
    idx.commit()
    assert idx._keys is not None and not idx._keys.full and idx._keys.capacity >= n
    assert all(f"k{i}" in idx._keys for i in range(n))
    for i in range(0, n, 997):
        idx.upsert(f"k{i}", pack({"n": -i}))
    idx.commit()
    assert idx.num_docs == n


def test_clear_forgets_the_keys_and_rebuilt_keys_are_replaced_later() -> None:
    idx = MapIndex("m", MapSpec())
    idx.upsert("a", pack({"t": "x"}))
    idx.commit()
    idx.clear()
    idx.upsert("a", pack({"t": "y"}), fresh=True)
    idx.commit()
    idx.upsert("a", pack({"t": "z"}))
    idx.commit()
    assert idx.num_docs == 1


def test_a_held_back_add_stays_before_a_later_delete_of_its_key() -> None:
    idx = MapIndex("m", MapSpec())
    idx.upsert("a", pack({"t": "one"}))
    idx.upsert("b", pack({"t": "two"}))
    idx.delete("a")
    idx.commit()
    assert idx.num_docs == 1 and idx.stored_value("a") is None


def test_more_adds_than_one_burst_all_land_by_the_commit() -> None:
    idx = MapIndex("m", MapSpec())
    for i in range(ADD_BURST * 2 + 7):
        idx.upsert(f"k{i}", pack({"t": f"w{i}"}))
    idx.commit()
    assert idx.num_docs == ADD_BURST * 2 + 7


def test_clear_drops_the_adds_held_back_before_it() -> None:
    idx = MapIndex("m", MapSpec())
    idx.upsert("a", pack({"t": "one"}))
    idx.clear()
    idx.upsert("b", pack({"t": "two"}), fresh=True)
    idx.commit()
    assert idx.num_docs == 1 and idx.stored_value("b") is not None


leaf = st.one_of(
    st.text(max_size=8),
    st.integers(),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
    st.binary(max_size=4),
)
values = st.recursive(
    leaf,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=4) | st.integers(0, 3), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(values, min_size=1, max_size=6))
def test_one_pass_field_extraction_equals_the_general_one(docs: list[Any]) -> None:
    fast = MapIndex("m", MapSpec())
    general = MapIndex("m", MapSpec())
    for v in docs:
        got = fast.texts_for(v)
        want = general._targets_of(general.schema.field_texts(v))
        assert got == want
    assert fast.field_targets == general.field_targets
