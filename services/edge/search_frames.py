"""SEARCH_RESP and SEARCH_UPDATE frames written straight from the search service's hits.

A hit's value arrives as the MsgPack bytes the search service keeps for the document (the bytes
the storage nodes hold), so it is spliced into the frame as it is instead of being decoded and
encoded again: on a search this is most of the edge's per-hit work. The frame is plain MsgPack,
the same a ``msgpack.packb`` of the equivalent map gives (``tests/unit/test_edge_search_frames.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import msgpack

from services.edge.leaf_frames import array_header

_pack = msgpack.Packer(use_bin_type=True).pack
_NIL = b"\xc0"


class HitLike(Protocol):
    """What a hit needs for the wire (a ``search_pb2.SearchHit`` or a client ``SearchHit``)."""

    @property
    def key(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def matched_terms(self) -> Iterable[str]: ...
    @property
    def value(self) -> bytes | None: ...


# {"type": "SEARCH_RESP", "payload": {"requestId": .., "results": [..], "totalCount": .., "error"?}}
_RESP_HEAD = _pack("type") + _pack("SEARCH_RESP") + _pack("payload")
_REQUEST_ID = _pack("requestId")
_RESULTS = _pack("results")
_TOTAL = _pack("totalCount")
_ERROR = _pack("error")
# one result: {"key": .., "value": .., "score": .., "matchedTerms": [..]}
_HIT_KEY = b"\x84" + _pack("key")
_VALUE = _pack("value")
_SCORE = _pack("score")
_TERMS = _pack("matchedTerms")
# {"type": "SEARCH_UPDATE", "payload": {"subscriptionId", "key", "value", "score",
#  "matchedTerms", "changeType"}}
_UPDATE_HEAD = b"\x82" + _pack("type") + _pack("SEARCH_UPDATE") + _pack("payload") + b"\x86"
_SUB_ID = _pack("subscriptionId")
_KEY = _pack("key")
_CHANGE = _pack("changeType")


def _strings(values: Iterable[str]) -> bytes:
    return _pack(list(values))


def search_resp_frame(
    request_id: str, hits: Sequence[HitLike], *, error: str | None = None
) -> bytes:
    """The SEARCH_RESP of ``hits`` (best first); an empty ``value`` is sent as nil."""
    parts = [
        b"\x82",
        _RESP_HEAD,
        b"\x84" if error is not None else b"\x83",
        _REQUEST_ID,
        _pack(request_id),
        _RESULTS,
        array_header(len(hits)),
    ]
    add = parts.append
    pack = _pack
    for h in hits:
        add(_HIT_KEY)
        add(pack(h.key))
        add(_VALUE)
        add(h.value or _NIL)
        add(_SCORE)
        add(pack(float(h.score)))
        add(_TERMS)
        add(pack(list(h.matched_terms)))
    add(_TOTAL)
    add(pack(len(hits)))
    if error is not None:
        add(_ERROR)
        add(pack(error))
    return b"".join(parts)


def search_update_frame(
    subscription_id: str,
    key: str,
    value: bytes | None,
    score: float,
    matched_terms: Iterable[str],
    change_type: str,
) -> bytes:
    """One SEARCH_UPDATE; ``value`` is the document's MsgPack bytes (None or empty: nil)."""
    return b"".join(
        (
            _UPDATE_HEAD,
            _SUB_ID,
            _pack(subscription_id),
            _KEY,
            _pack(key),
            _VALUE,
            value or _NIL,
            _SCORE,
            _pack(float(score)),
            _TERMS,
            _strings(matched_terms),
            _CHANGE,
            _pack(str(change_type)),
        )
    )
