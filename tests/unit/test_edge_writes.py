"""The edge's write path without a network: op intake (validation, timestamp normalisation,
clamping, value re-encoding) and the coalescer (many frames, one storage call per tick)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgpack
import pytest

from libs.crdt import HLC
from libs.storage_client import OpBatchBuilder, OpStatus, RoutedApplyResult, WriteConcern
from libs.wire import BadFrame
from services.edge.metrics import EdgeMetrics
from services.edge.writes import (
    OR_ADD,
    OR_REMOVE,
    PUT,
    REMOVE,
    OpIntake,
    WriteCoalescer,
    concern_of,
    op_ack_frame,
)

NOW = int(time.time() * 1000)


def intake() -> OpIntake:
    return OpIntake(HLC("edge-test").now, max_drift_ms=60_000)


def columns(b: OpBatchBuilder) -> Any:
    return b.build()


def op(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "1",
        "mapName": "m",
        "key": "k",
        "opType": "PUT",
        "record": {
            "value": {"a": 1},
            "timestamp": {"millis": float(NOW), "counter": 2.0, "nodeId": "n"},
        },
    }
    base.update(kw)
    return base


def test_a_put_with_float_millis_is_normalised_and_its_value_re_encoded() -> None:
    b = OpBatchBuilder()
    res = intake().add(b, [op()], "e/1")
    assert res.accepted_ids == ["1"] and res.refused == [] and res.last_id == "1"
    pb = columns(b)
    assert list(pb.kinds) == [PUT] and list(pb.millis) == [NOW] and list(pb.counters) == [2]
    assert msgpack.unpackb(pb.values[0]) == {"a": 1}
    assert list(pb.origins) == ["e/1"]


def test_a_timestamp_beyond_the_drift_is_clamped_to_the_server_clock() -> None:
    b = OpBatchBuilder()
    future = NOW + 3_600_000
    intake().add(
        b,
        [op(record={"value": 1, "timestamp": {"millis": future, "counter": 0, "nodeId": "n"}})],
        "",
    )
    assert columns(b).millis[0] <= int(time.time() * 1000)


def test_remove_forms_become_tombstones_and_a_nil_record_gets_a_server_timestamp() -> None:
    b = OpBatchBuilder()
    clock = HLC("edge-test", clock=lambda: 12345)
    OpIntake(clock.now, 60_000).add(
        b,
        [
            op(
                id="1",
                opType="REMOVE",
                record={"value": None, "timestamp": {"millis": 5, "counter": 0, "nodeId": "n"}},
            ),
            op(id="2", opType=None, record=None),
            op(
                id="3",
                record={"value": None, "timestamp": {"millis": 7, "counter": 0, "nodeId": "n"}},
            ),
        ],
        "",
    )
    pb = columns(b)
    assert list(pb.kinds) == [REMOVE, REMOVE, REMOVE]
    assert list(pb.millis) == [5, 12345, 7] and list(pb.node_ids)[1] == "edge-test"
    assert list(pb.values) == [b"", b"", b""]


def test_or_ops_carry_their_tags() -> None:
    b = OpBatchBuilder()
    ts = {"millis": 10, "counter": 1, "nodeId": "n"}
    intake().add(
        b,
        [
            {
                "id": "1",
                "mapName": "m",
                "key": "k",
                "opType": "OR_ADD",
                "orRecord": {"value": "x", "timestamp": ts, "tag": "10:1:n", "ttlMs": 500},
            },
            {
                "id": "2",
                "mapName": "m",
                "key": "k",
                "opType": "OR_ADD",
                "orRecord": {"value": "y", "timestamp": ts},
            },
            {
                "id": "3",
                "mapName": "m",
                "key": "k",
                "opType": "OR_REMOVE",
                "orTag": "10:1:n",
                "timestamp": ts,
            },
        ],
        "",
    )
    pb = columns(b)
    assert list(pb.kinds) == [OR_ADD, OR_ADD, OR_REMOVE]
    assert list(pb.tags) == ["10:1:n", "10:1:n", "10:1:n"]
    assert list(pb.ttl_ms) == [500, 0, 0]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("not-a-map", "op must be a map"),
        (op(mapName=""), "mapName"),
        (op(key=5), "key"),
        (op(record={"value": 1}), "timestamp"),
        (
            op(record={"value": 1, "timestamp": {"millis": 1.5, "counter": 0, "nodeId": "n"}}),
            "millis",
        ),
        (
            op(record={"value": 1, "timestamp": {"millis": 1, "counter": 0, "nodeId": "a:b"}}),
            "nodeId",
        ),
        (
            op(record={"value": 1, "timestamp": {"millis": -1, "counter": 0, "nodeId": "n"}}),
            "range",
        ),
        (
            op(
                record={
                    "value": 1,
                    "ttlMs": -5,
                    "timestamp": {"millis": 1, "counter": 0, "nodeId": "n"},
                }
            ),
            "ttlMs",
        ),
        (
            op(record={"value": 2**70, "timestamp": {"millis": 1, "counter": 0, "nodeId": "n"}}),
            "cannot be stored",
        ),
    ],
)
def test_malformed_ops_are_refused_with_a_reason_and_the_rest_of_the_batch_goes_on(
    bad: Any, reason: str
) -> None:
    b = OpBatchBuilder()
    res = intake().add(b, [bad, op(id="9")], "")
    assert res.accepted_ids == ["9"]
    assert len(res.refused) == 1 and reason in res.refused[0][1]
    assert res.last_id == "9"


def test_ids_are_stringified_and_an_empty_batch_acks_as_zero() -> None:
    assert intake().add(OpBatchBuilder(), [op(id=12.0)], "").last_id == "12"
    assert intake().add(OpBatchBuilder(), [op(id=None)], "").last_id == "unknown"
    assert intake().add(OpBatchBuilder(), [], "").last_id == "0"


def test_write_concern_names_map_to_levels_and_unknown_names_are_a_bad_frame() -> None:
    assert concern_of(None) == WriteConcern.APPLIED
    assert concern_of("PERSISTED") == WriteConcern.PERSISTED
    with pytest.raises(BadFrame):
        concern_of("SOMEDAY")


# --- coalescer -----------------------------------------------------------------------------------


class FakeRouter:
    """Records each Apply and answers after ``release`` is set; op ``bad`` gets OP_INVALID."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail = False

    async def apply(
        self, builder: OpBatchBuilder, concern: int, *, timeout: float | None = None
    ) -> RoutedApplyResult:
        keys = list(builder.keys)
        self.calls.append(keys)
        await self.release.wait()
        if self.fail:
            raise ConnectionError("owner down")
        statuses = [OpStatus.OP_INVALID if k == "bad" else OpStatus.OP_APPLIED for k in keys]
        errors = {i: "bad op" for i, k in enumerate(keys) if k == "bad"}
        return RoutedApplyResult(statuses, errors, WriteConcern.REPLICATED)


def submit(c: WriteCoalescer, keys: list[str]) -> asyncio.Future[Any]:
    b, start = c.builder(WriteConcern.APPLIED)
    for k in keys:
        b.append("m", k, PUT, 1, 0, "n", b"\x01")
    return c.commit(WriteConcern.APPLIED, start)


async def test_frames_of_one_loop_turn_leave_in_one_call_and_resolve_per_frame() -> None:
    router = FakeRouter()
    c = WriteCoalescer(router, EdgeMetrics(), max_inflight=1)  # type: ignore[arg-type]
    f1, f2, f3 = submit(c, ["a", "b"]), submit(c, ["bad"]), submit(c, ["c", "bad"])
    o1, o2, o3 = await asyncio.gather(f1, f2, f3)
    assert router.calls == [["a", "b", "bad", "c", "bad"]]
    assert o1.errors == {} and o1.achieved == WriteConcern.REPLICATED
    assert o2.errors == {0: (OpStatus.OP_INVALID, "bad op")}
    assert o3.errors == {1: (OpStatus.OP_INVALID, "bad op")}


async def test_frames_arriving_while_a_call_is_in_flight_form_the_next_batch() -> None:
    router = FakeRouter()
    router.release.clear()
    c = WriteCoalescer(router, EdgeMetrics(), max_inflight=1)  # type: ignore[arg-type]
    first = submit(c, ["a"])
    await asyncio.sleep(0)  # the flush runs: one call in flight
    later = [submit(c, [f"k{i}"]) for i in range(5)]
    await asyncio.sleep(0)
    assert router.calls == [["a"]]
    router.release.set()
    await asyncio.gather(first, *later)
    assert router.calls == [["a"], ["k0", "k1", "k2", "k3", "k4"]]


async def test_an_unreachable_owner_fails_the_frames_so_clients_retry() -> None:
    router = FakeRouter()
    router.fail = True
    c = WriteCoalescer(router, EdgeMetrics())  # type: ignore[arg-type]
    outcome = await submit(c, ["a"])
    assert outcome.failed and "owner down" in outcome.failed


async def test_a_frame_with_no_accepted_ops_resolves_at_once_without_a_call() -> None:
    router = FakeRouter()
    c = WriteCoalescer(router, EdgeMetrics())  # type: ignore[arg-type]
    outcome = await submit(c, [])
    assert outcome.errors == {} and router.calls == []


def test_op_ack_frames_decode_to_the_protocol_message_for_every_level() -> None:
    for level, name in [
        (WriteConcern.PERSISTED, "PERSISTED"),
        (WriteConcern.APPLIED, "APPLIED"),
        (0, "APPLIED"),
    ]:
        assert msgpack.unpackb(op_ack_frame("42", level)) == {
            "type": "OP_ACK",
            "payload": {"lastId": "42", "achievedLevel": name},
        }
