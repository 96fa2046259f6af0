"""Failures talking to the search service, one base class, each carrying the gRPC status code."""

from __future__ import annotations

import grpc


class SearchError(Exception):
    """A search call failed; ``code`` is the gRPC status code."""

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class QueryRejected(SearchError):
    """The query is malformed or names a field the map does not have (INVALID_ARGUMENT); the
    message says what and where, in words fit for the client."""


class SearchUnavailable(SearchError):
    """The service could not be reached or did not answer in time; retry later."""


def stream_error(err: grpc.aio.AioRpcError, address: str) -> SearchError:
    """What a search in flight raises when its stream fails: the peer is unreachable for now."""
    error = translate(err, address)
    if isinstance(error, SearchUnavailable):
        return error
    return SearchUnavailable(str(error), code=error.code)


def translate(err: grpc.aio.AioRpcError, address: str) -> SearchError:
    code = err.code()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return QueryRejected(err.details() or "invalid query", code=code)
    msg = f"search {address}: {code.name if code else '?'}: {err.details()}"
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return SearchUnavailable(msg, code=code)
    return SearchError(msg, code=code)
