"""SEARCH_RESP / SEARCH_UPDATE frames spliced from stored value bytes are the same MsgPack a
``msgpack.packb`` of the equivalent message gives; the gRPC engine choice respects the
environment."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import msgpack

from libs.runtime.grpc_engine import IOMGR_EXPERIMENTS, use_iomgr_engine
from libs.search_client import SearchHit
from services.edge.search_frames import search_resp_frame, search_update_frame
from topgun_rpc import search_pb2

VALUES: list[Any] = [
    {"title": "Machine learning", "tags": ["a", "b"], "n": 3, "f": 1.5},
    "a bare string",
    None,
    [1, 2, {"nested": True}],
    {"long": "x" * 70_000},
]


def packed(msg: Any) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)


def test_search_resp_frame_matches_packb_of_the_message() -> None:
    hits = [
        SearchHit(f"k{i}", 1.25 / (i + 1), ("machine", "learning")[: i % 3], packed(v))
        for i, v in enumerate(VALUES)
    ]
    frame = search_resp_frame("r1", hits)
    assert frame == packed(
        {
            "type": "SEARCH_RESP",
            "payload": {
                "requestId": "r1",
                "results": [
                    {
                        "key": h.key,
                        "value": v,
                        "score": h.score,
                        "matchedTerms": list(h.matched_terms),
                    }
                    for h, v in zip(hits, VALUES, strict=True)
                ],
                "totalCount": len(hits),
            },
        }
    )


def test_search_resp_frame_from_service_hits_sends_an_empty_value_as_nil() -> None:
    resp = search_pb2.SearchResponse()
    resp.hits.add(key="a", score=2.0, matched_terms=["x"], value=packed({"t": "x"}))
    resp.hits.add(key="b", score=1.0, matched_terms=[], value=b"")
    got = msgpack.unpackb(search_resp_frame("r2", resp.hits), raw=False)
    assert got["payload"]["results"] == [
        {"key": "a", "value": {"t": "x"}, "score": 2.0, "matchedTerms": ["x"]},
        {"key": "b", "value": None, "score": 1.0, "matchedTerms": []},
    ]


def test_an_error_answer_has_no_results_and_the_error() -> None:
    assert search_resp_frame("r3", [], error="malformed query") == packed(
        {
            "type": "SEARCH_RESP",
            "payload": {
                "requestId": "r3",
                "results": [],
                "totalCount": 0,
                "error": "malformed query",
            },
        }
    )


def test_search_update_frame_matches_packb_of_the_message() -> None:
    for value in VALUES:
        frame = search_update_frame("s1", "k", packed(value), 0.5, ("t",), "ENTER")
        assert frame == packed(
            {
                "type": "SEARCH_UPDATE",
                "payload": {
                    "subscriptionId": "s1",
                    "key": "k",
                    "value": value,
                    "score": 0.5,
                    "matchedTerms": ["t"],
                    "changeType": "ENTER",
                },
            }
        )
    leave = msgpack.unpackb(search_update_frame("s1", "k", None, 0.0, (), "LEAVE"))
    assert leave["payload"]["value"] is None and leave["payload"]["changeType"] == "LEAVE"


def _engine_in_fresh_process(env: dict[str, str]) -> str:
    code = (
        "import os; from libs.runtime import use_iomgr_engine; "
        "print(use_iomgr_engine(), os.environ.get('GRPC_EXPERIMENTS'), "
        "os.environ.get('GRPC_POLL_STRATEGY'))"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GRPC_", "TOPGUN_GRPC"))}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**base, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_the_iomgr_engine_is_chosen_before_grpc_loads_unless_the_environment_chose() -> None:
    assert _engine_in_fresh_process({}) == f"True {IOMGR_EXPERIMENTS} epoll1"
    assert _engine_in_fresh_process({"GRPC_POLL_STRATEGY": "poll"}) == "False None poll"
    assert _engine_in_fresh_process({"TOPGUN_GRPC_ENGINE": "event_engine"}) == "False None None"
    # too late once grpc is imported (as it is in this process): nothing changes
    env: dict[str, str] = {}
    assert not use_iomgr_engine(env) and env == {}
