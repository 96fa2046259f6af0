"""The one error the query language raises: a query that cannot be compiled."""

from __future__ import annotations


class QueryError(ValueError):
    """A malformed query: wrong types in a predicate tree, a bad regex, a bad sort or limit.

    The message says what is wrong and where, so the edge can send it to the client as an
    ``ERROR`` unchanged.
    """
