"""Failures talking to a storage node, one base class, each carrying the gRPC status code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from libs.rpc import RequestStream


class StorageError(Exception):
    """A storage call failed; ``code`` is the gRPC status code, ``address`` the node."""

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None, address: str = ""):
        super().__init__(message)
        self.code = code
        self.address = address


class StorageUnavailable(StorageError):
    """The node could not be reached or did not answer within the deadline; retry later."""


class NotOwner(StorageError):
    """The node does not hold what was asked for (FAILED_PRECONDITION); ask the owner."""


class BadRequest(StorageError):
    """The node rejected the request as malformed (INVALID_ARGUMENT)."""


class FeedDropped(StorageError):
    """A stream was ended by the node because the subscriber fell behind (RESOURCE_EXHAUSTED);
    reconnect and resume from the last sequence numbers seen."""


def translate(err: grpc.aio.AioRpcError, address: str) -> StorageError:
    return error_for(err.code(), err.details() or "", address)


def error_for(code: grpc.StatusCode | None, details: str, address: str) -> StorageError:
    """The StorageError a call that ended with ``code`` raises."""
    msg = f"{address}: {code.name if code else '?'}: {details}"
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return StorageUnavailable(msg, code=code, address=address)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return NotOwner(msg, code=code, address=address)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return BadRequest(msg, code=code, address=address)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return FeedDropped(msg, code=code, address=address)
    return StorageError(msg, code=code, address=address)


_CODES: dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}


def request_stream(opener: Callable[[], Any], address: str) -> RequestStream[Any, Any]:
    """A ``RequestStream`` (ApplyStream, ReplicateStream) that fails the way the unary call
    would: gRPC errors as StorageErrors, a broken stream or a missed deadline as
    StorageUnavailable, and an answer carrying ``error_code`` as the error for that code."""

    def unavailable(code: grpc.StatusCode, why: str) -> StorageError:
        return StorageUnavailable(f"{address}: {code.name}: {why}", code=code, address=address)

    def check(resp: Any) -> StorageError | None:
        if not resp.error_code:
            return None
        return error_for(_CODES.get(resp.error_code, grpc.StatusCode.UNKNOWN), resp.error, address)

    return RequestStream(
        opener,
        translate=lambda e: translate(e, address),
        unavailable=unavailable,
        check=check,
        name=f"stream-{address}",
    )
