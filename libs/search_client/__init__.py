"""The async client other services use to talk to the search service over gRPC.

- ``SearchClient(address)``: ``search`` (raises ``QueryRejected`` for a malformed query),
  ``subscribe`` / ``unsubscribe``, ``status``, ``rebuild``; a deadline on every call.
- ``LiveSearch(client, subscriber, on_update)``: one subscriber's live searches over one Updates
  stream (run ``run()`` as a task); first results always reach the caller before updates, and
  live searches survive a search-service restart.
"""

from libs.search_client._client import SearchClient, SearchHit, SearchOptions, SearchStatus
from libs.search_client._errors import QueryRejected, SearchError, SearchUnavailable
from libs.search_client._live import LiveSearch, LiveUpdate

__all__ = [
    "LiveSearch",
    "LiveUpdate",
    "QueryRejected",
    "SearchClient",
    "SearchError",
    "SearchHit",
    "SearchOptions",
    "SearchStatus",
    "SearchUnavailable",
]
