"""JavaScript number and JSON printing: round trips and agreement with Python's JSON reader."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from libs.crdt import canonical_json, js_number_to_string, normalize_value, or_value_string

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**53), 2**53),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=6),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=4), children, max_size=4),
    ),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_js_number_to_string_reads_back_as_the_same_float(x: float) -> None:
    s = js_number_to_string(x)
    assert float(s) == x
    assert "e" not in s or abs(x) >= 1e21 or abs(x) < 1e-6
    if x.is_integer() and abs(x) < 1e21:
        assert "." not in s  # integral values never print ".0"
        if abs(x) <= 2**53:
            assert s == str(int(x))


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_canonical_json_is_valid_json_of_the_same_value(v: object) -> None:
    text = canonical_json(v)
    # JavaScript reads every number as a float64.
    back = json.loads(text, parse_int=lambda s: int(s) if abs(int(s)) <= 2**53 else float(s))
    assert normalize_value(back) == normalize_value(v)
    # Sorting is recursive and idempotent.
    assert canonical_json(back) == text


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_or_value_string_of_scalars_is_string_like_javascript(v: object) -> None:
    text = or_value_string(v)
    if v is None:
        assert text == "null"
    elif isinstance(v, bool):
        assert text == ("true" if v else "false")
    elif isinstance(v, int | float):
        assert float(text) == v or (math.isnan(float(text)) and v != v)
    elif isinstance(v, str):
        assert text == v
    else:
        json.loads(text)  # objects and arrays are JSON
