"""hash.json: FNV-1a over UTF-16 units, combine, canonical JSON and JavaScript number printing."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from libs.crdt import (
    canonical_json,
    combine,
    fnv1a,
    fnv1a_many,
    hash_hex,
    js_number_to_string,
    mix_many,
)

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "hash.json").read_text("utf-8"))


def _short(s: str, n: int = 24) -> str:
    return ascii(s)[1:-1][:n] or "empty"


def _utf8_fnv(s: str) -> int:
    h = 0x811C9DC5
    for b in s.encode("utf-8", "surrogatepass"):
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


FNV_CASES = VECTORS["fnv1a32"]


@pytest.mark.parametrize(
    "case", FNV_CASES, ids=[f"{i}-{_short(c['input'])}" for i, c in enumerate(FNV_CASES)]
)
def test_fnv1a_hashes_utf16_code_units(case: dict[str, Any]) -> None:
    s = case["input"]
    assert len(s.encode("utf-16-le", "surrogatepass")) // 2 == case["utf16_code_units"]
    assert fnv1a(s) == case["hash"]
    assert hash_hex(fnv1a(s)) == case["hex"]
    if "wrong_if_utf8_bytes" in case:
        # The trap is real: hashing UTF-8 bytes gives the listed wrong value.
        assert _utf8_fnv(s) == case["wrong_if_utf8_bytes"] != case["hash"]


def test_fnv1a_many_equals_scalar_for_every_vector_input() -> None:
    inputs = [c["input"] for c in FNV_CASES]
    got = fnv1a_many(inputs)
    assert got.dtype == np.uint32
    assert got.tolist() == [c["hash"] for c in FNV_CASES]


COMBINE_CASES = VECTORS["combine"]


@pytest.mark.parametrize(
    "case", COMBINE_CASES, ids=[f"{i}-{c['inputs'][:3]}" for i, c in enumerate(COMBINE_CASES)]
)
def test_combine_is_sum_of_mixed_hashes(case: dict[str, Any]) -> None:
    assert combine(case["inputs"]) == case["result"]
    assert hash_hex(combine(case["inputs"])) == case["hex"]
    assert int(mix_many(case["inputs"]).sum(dtype=np.uint32)) == case["result"]


def test_combine_of_union_is_sum_of_combines_but_not_combine_of_combines() -> None:
    p = VECTORS["combine_wrapping_property"]
    ca, cb = combine(p["A"]), combine(p["B"])
    assert ca == p["combine_A"]
    assert cb == p["combine_B"]
    assert combine(p["A"] + p["B"]) == p["combine_A_union_B"]
    assert (ca + cb) & 0xFFFFFFFF == p["sum_mod_2_32_of_combine_A_and_combine_B"]
    assert combine([ca, cb]) == p["combine_of_the_two_combines"] != p["combine_A_union_B"]


CANON_CASES = VECTORS["canonical_json"]


@pytest.mark.parametrize(
    "case",
    CANON_CASES,
    ids=[f"{i}-{_short(c['value_as_json'], 30)}" for i, c in enumerate(CANON_CASES)],
)
def test_canonical_json_matches_hash_object(case: dict[str, Any]) -> None:
    value = json.loads(case["value_as_json"])
    text = canonical_json(value)
    assert text == case["canonical_json"]
    assert fnv1a(text) == case["hash"]


NUMBER_CASES = VECTORS["js_numbers"]


@pytest.mark.parametrize(
    "case", NUMBER_CASES, ids=[f"{c['float64_be_hex']}-{c['String']}" for c in NUMBER_CASES]
)
def test_js_number_to_string_matches_string_and_json_stringify(case: dict[str, Any]) -> None:
    (x,) = struct.unpack(">d", bytes.fromhex(case["float64_be_hex"]))
    assert js_number_to_string(x) == case["String"]
    assert canonical_json(x) == case["JSON_stringify"]
    if x == x and abs(x) != float("inf") and x.is_integer() and abs(x) < 2**53:
        # The same number held as a Python int prints the same.
        assert js_number_to_string(int(x)) == case["String"]
