"""Hypothesis strategies shared by the CRDT property tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from libs.crdt import LwwRecord, OrRecord, Timestamp

T0 = 1_700_000_000_000
NODES = ["n1", "n2", "n3"]
# A few keys so that writes collide; some non-ASCII and one outside the BMP.
KEYS = ["a", "b", "c", "user-1", "user-2", "é", "日本", "k😀", "x:y|z", ""]

timestamps = st.builds(
    Timestamp,
    st.integers(T0, T0 + 5),  # few millis: ties on millis are the norm
    st.integers(0, 3),
    st.sampled_from(NODES),
)
values = st.one_of(
    st.none(),
    st.integers(-5, 5),
    st.text(max_size=4),
    st.dictionaries(st.sampled_from(["a", "b", "10", "2"]), st.integers(0, 3), max_size=3),
)


@st.composite
def lww_writes(draw: st.DrawFn, max_size: int = 30) -> list[tuple[str, LwwRecord]]:
    """Remote LWW records with globally unique timestamps (as real HLCs produce)."""
    stamps = draw(st.lists(timestamps, max_size=max_size, unique=True))
    out = []
    for ts in stamps:
        key = draw(st.sampled_from(KEYS))
        value = draw(values)
        ttl = draw(st.one_of(st.none(), st.integers(1, 10_000)))
        out.append((key, LwwRecord(value, ts, ttl)))
    return out


@st.composite
def or_ops(draw: st.DrawFn, max_size: int = 30) -> list[tuple[str, Any]]:
    """OR adds ("add", key, record) and removes ("remove", tag) of tags that were added."""
    stamps = draw(st.lists(timestamps, min_size=1, max_size=max_size, unique=True))
    ops: list[tuple[str, Any]] = []
    tags: list[str] = []
    for ts in stamps:
        key = draw(st.sampled_from(KEYS))
        value = draw(values)
        ttl = draw(st.one_of(st.none(), st.integers(1, 10_000)))
        rec = OrRecord(value, ts, str(ts), ttl)
        ops.append(("add", (key, rec)))
        tags.append(rec.tag)
    for tag in draw(st.lists(st.sampled_from(tags), max_size=len(tags) // 2 + 1)):
        ops.append(("remove", tag))
    return ops


@st.composite
def deliveries(draw: st.DrawFn, items: list[Any]) -> list[Any]:
    """The same items in any order, some of them more than once."""
    if not items:
        return []
    dups = draw(st.lists(st.sampled_from(items), max_size=8))
    return draw(st.permutations(items + dups))
