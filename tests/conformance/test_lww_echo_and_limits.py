"""LWW behaviour the vectors do not cover: adopting a server's re-stamped echo (LWWMap
adoptServerEcho), TTL validation, and strict clocks refusing a whole batch."""

from __future__ import annotations

import pytest

from libs.crdt import HLC, ClockDriftError, LwwMap, LwwRecord, Timestamp, lww_item_hash

T0 = 1_700_000_000_000


def _map(node: str = "client", strict: bool = False) -> LwwMap:
    return LwwMap(HLC(node, clock=lambda: T0, max_drift_ms=1000, strict=strict))


def test_server_echo_with_equal_value_and_older_stamp_is_adopted_into_the_tree() -> None:
    m = _map()
    m.merge("doc", LwwRecord({"title": "hello", "n": 1}, Timestamp(T0 + 500, 0, "client")))
    echo = LwwRecord({"n": 1.0, "title": "hello"}, Timestamp(T0, 0, "server"))
    assert not m.merge("doc", echo)  # older: LWW rejects it
    assert m.adopt_server_echo("doc", echo)  # same value (key order, 1 == 1.0): adopt
    assert m.get_record("doc") == echo
    assert m.merkle.entry("doc") == lww_item_hash("doc", echo.timestamp)


def test_server_echo_is_not_adopted_over_a_different_local_value_or_when_newer() -> None:
    m = _map()
    m.merge("doc", LwwRecord({"n": 2}, Timestamp(T0 + 500, 0, "client")))
    assert not m.adopt_server_echo("doc", LwwRecord({"n": 1}, Timestamp(T0, 0, "server")))
    assert not m.adopt_server_echo("doc", LwwRecord({"n": 2}, Timestamp(T0 + 900, 0, "s")))
    assert not m.adopt_server_echo("missing", LwwRecord(1, Timestamp(T0, 0, "s")))
    assert not m.adopt_server_echo("doc", LwwRecord({"n": True}, Timestamp(T0, 0, "s")))
    assert m.get_record("doc") == LwwRecord({"n": 2}, Timestamp(T0 + 500, 0, "client"))


@pytest.mark.parametrize("ttl", [0, -5, float("inf"), float("nan"), True])
def test_set_refuses_a_ttl_that_is_not_a_positive_finite_number(ttl: float) -> None:
    m = _map()
    with pytest.raises(ValueError, match="TTL must be a positive finite number"):
        m.set("k", 1, ttl)
    assert "k" not in m and m.merkle.root == 0


def test_strict_clock_refuses_a_drifting_batch_before_storing_anything() -> None:
    m = _map(strict=True)
    with pytest.raises(ClockDriftError):
        m.merge_batch(["a", "b"], [T0, T0 + 1001], [0, 0], ["x", "y"], [1, 2])
    assert len(m) == 0 and m.merkle.root == 0
    assert m.hlc.state.last_millis == 0
    changed = m.merge_batch(["a", "b"], [T0, T0 + 1000], [0, 0], ["x", "y"], [1, 2])
    assert changed.tolist() == [True, True]


def test_expired_records_stay_stored_and_hashed_but_are_hidden() -> None:
    m = _map()
    m.merge("s", LwwRecord("tok", Timestamp(T0, 0, "x"), 100))
    assert m.get("s", now=T0 + 100) == "tok"
    assert m.get("s", now=T0 + 101) is None
    assert m.entries(now=T0 + 101) == {}
    assert m.merkle.entry("s") == lww_item_hash("s", Timestamp(T0, 0, "x"))
