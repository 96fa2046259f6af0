"""The client-frame decoder turns every kind of bad input into the right ProtocolError."""

from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.wire import (
    MAX_BATCH_ITEMS,
    BadFrame,
    ProtocolError,
    TooDeep,
    TooLarge,
    check_depth,
    count_inbound_batch_items,
    decode,
    decode_value,
    encode,
    encode_js,
    pack_inbound_batch,
    pack_outbound_batch,
    unpack_inbound_batch,
)


def nested_frame(depth: int, inner: bytes = b"\xc0") -> bytes:
    """``{type: "X", v: [[...inner...]]}`` whose containers nest ``depth`` levels (map = 1)."""
    return b"\x82\xa4type\xa1X\xa1v" + b"\x91" * (depth - 1) + inner


def nested_op_frame(depth: int) -> bytes:
    """A valid CLIENT_OP whose record value nests so that the whole frame is ``depth`` deep."""
    value: object = "leaf"
    for _ in range(depth - 4):  # frame, payload, record, value levels
        value = {"n": value}
    return msgpack.packb(
        {
            "type": "CLIENT_OP",
            "payload": {
                "id": "1",
                "mapName": "m",
                "key": "k",
                "record": {
                    "value": value,
                    "timestamp": {"millis": 1, "counter": 0, "nodeId": "n"},
                },
            },
        }
    )


def test_decode_returns_the_message_map() -> None:
    msg = decode(encode({"type": "PING", "timestamp": 1700000000000}))
    assert msg == {"type": "PING", "timestamp": 1700000000000}


def test_decode_reads_client_float_millis_and_map16() -> None:
    raw = encode_js({"type": "PING", "timestamp": 1700000000000})
    assert raw[0] == 0xDE
    msg = decode(raw)
    assert msg["timestamp"] == 1700000000000.0


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"", "empty"),
        (b"\xc1", "0xc1"),
        (b"\x91", "incomplete"),
        (b"\x82\xa4type\xa1X\xa1v", "incomplete"),  # truncated: value missing
        (b"\xde\x00\x05\xa4type", "not valid MsgPack"),  # map16 that promises more than it holds
        (b"\xc0\xc0", "more than one MsgPack value"),
        (b"\x82\xa4type\xa1X\x91\x01\xc0", "map keys must be scalars"),
    ],
)
def test_malformed_or_truncated_bytes_are_bad_frames_that_say_why(raw: bytes, needle: str) -> None:
    with pytest.raises(BadFrame) as err:
        decode(raw)
    assert err.value.code == 400
    assert needle in err.value.message


@pytest.mark.parametrize(
    ("value", "kind"),
    [([1, 2], "array"), ("PING", "string"), (None, "nil"), (7, "number"), (b"x", "bin")],
)
def test_top_level_that_is_not_a_map_is_a_bad_frame_naming_what_came(
    value: object, kind: str
) -> None:
    with pytest.raises(BadFrame, match=f"got {kind}"):
        decode(encode(value))


def test_map_without_type_is_a_bad_frame() -> None:
    with pytest.raises(BadFrame, match="no 'type' field"):
        decode(encode({"payload": {}}))


def test_non_string_type_is_a_bad_frame() -> None:
    with pytest.raises(BadFrame, match="'type' must be a string, got number"):
        decode(encode({"type": 3}))


def test_nesting_at_the_limit_decodes() -> None:
    assert decode(nested_frame(256))["type"] == "X"


@pytest.mark.parametrize("depth", [257, 300, 500, 1025, 200_000])
def test_nesting_over_the_limit_is_too_deep(depth: int) -> None:
    with pytest.raises(TooDeep) as err:
        decode(nested_frame(depth))
    assert err.value.code == 400
    assert "256" in err.value.message


def test_empty_containers_count_as_a_level() -> None:
    with pytest.raises(TooDeep):
        decode(nested_frame(256, inner=b"\x80"))


def test_valid_client_op_nested_300_and_500_deep_is_refused() -> None:
    assert decode(nested_op_frame(200))["type"] == "CLIENT_OP"
    for depth in (300, 500):
        with pytest.raises(TooDeep):
            decode(nested_op_frame(depth))


def test_tighter_depth_limit_is_honoured() -> None:
    decode(nested_frame(10), max_depth=10)
    with pytest.raises(TooDeep, match="10 levels"):
        decode(nested_frame(11), max_depth=10)


def test_depth_check_alone_on_deep_arrays_without_a_map() -> None:
    check_depth(b"\x91" * 256 + b"\xc0")
    with pytest.raises(TooDeep):
        check_depth(b"\x91" * 257 + b"\xc0")


def test_frame_over_the_size_cap_is_too_large() -> None:
    raw = encode({"type": "X", "blob": "a" * (2 * 1024 * 1024)})
    with pytest.raises(TooLarge) as err:
        decode(raw)
    assert err.value.code == 413
    assert "2097152" in err.value.message


def test_size_cap_is_configurable() -> None:
    raw = encode({"type": "X", "blob": "a" * 100})
    with pytest.raises(TooLarge):
        decode(raw, max_bytes=50)


def test_lone_surrogates_from_the_client_survive_decoding() -> None:
    raw = encode_js({"type": "X", "s": "a\ud800b"})
    assert decode(raw)["s"] == "a\ud800b"


def test_decode_value_accepts_any_value_and_memoryview() -> None:
    assert decode_value(memoryview(b"\x93\x01\x02\x03")) == [1, 2, 3]


def test_error_frame_has_code_and_message() -> None:
    err = TooLarge("too big")
    assert err.to_frame() == {"type": "ERROR", "payload": {"code": 413, "message": "too big"}}


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_raise_nothing_but_protocol_errors(raw: bytes) -> None:
    try:
        decode(raw)
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.integers(min_value=1, max_value=600))
def test_random_bytes_behind_deep_prefixes_raise_nothing_but_protocol_errors(
    tail: bytes, depth: int
) -> None:
    try:
        decode(b"\x81\xa4type" + b"\x91" * depth + tail)
    except ProtocolError:
        pass


def _be_items(items: list[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(i)) + i for i in items)


def test_inbound_batch_splits_big_endian_length_prefixed_items() -> None:
    a, b = encode({"type": "PING", "timestamp": 1}), encode({"type": "PING", "timestamp": 2})
    assert unpack_inbound_batch(_be_items([a, b])) == [a, b]
    assert unpack_inbound_batch(pack_inbound_batch([a, b])) == [a, b]


def test_inbound_batch_truncated_tail_ends_the_list() -> None:
    a = encode({"type": "PING", "timestamp": 1})
    data = _be_items([a]) + struct.pack(">I", 100) + b"\x81"
    assert unpack_inbound_batch(data) == [a]
    assert unpack_inbound_batch(_be_items([a]) + b"\x00\x00") == [a]


def test_inbound_batch_bad_inner_items_surface_when_each_is_decoded() -> None:
    good = encode({"type": "PING", "timestamp": 1})
    items = unpack_inbound_batch(_be_items([b"\xc1", nested_frame(500), good, b""]))
    assert len(items) == 4
    outcomes: list[str] = []
    for item in items:
        try:
            outcomes.append(decode(item)["type"])
        except ProtocolError as err:
            outcomes.append(type(err).__name__)
    assert outcomes == ["BadFrame", "TooDeep", "PING", "BadFrame"]


def test_inbound_batch_with_more_than_8192_items_is_too_large() -> None:
    assert len(unpack_inbound_batch(_be_items([b""] * MAX_BATCH_ITEMS))) == MAX_BATCH_ITEMS
    with pytest.raises(TooLarge, match="8192"):
        unpack_inbound_batch(_be_items([b""] * (MAX_BATCH_ITEMS + 1)))


def test_oversized_batch_is_counted_in_full_for_the_rate_limiter() -> None:
    data = _be_items([b""] * 40_001)
    assert count_inbound_batch_items(data) == 40_001
    assert count_inbound_batch_items(data, limit=40_000) == 40_000
    truncated = _be_items([b"\x80", b"\x80"]) + struct.pack(">I", 9) + b"\x80"
    assert count_inbound_batch_items(truncated) == 2


def test_outbound_batch_is_little_endian_count_then_length_prefixed() -> None:
    a, b = encode({"type": "A"}), encode({"type": "B"})
    data = pack_outbound_batch([a, b])
    assert data[:4] == struct.pack("<I", 2)
    assert data[4:8] == struct.pack("<I", len(a))
    assert data[8 : 8 + len(a)] == a
    assert data[8 + len(a) : 12 + len(a)] == struct.pack("<I", len(b))
    assert data[12 + len(a) :] == b
