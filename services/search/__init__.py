"""The search service: tantivy indexes of the maps, fed by the storage nodes' change feeds, BM25
search and live search over gRPC (``proto/topgun_rpc/search.proto``).

Modules, from the outside in: ``server`` (gRPC surface and lifecycle), ``feed`` (following the
storage nodes, scans for rebuilds), ``indexer`` (applying changes, batched commits, positions),
``subscribers`` (routing live updates), ``live`` (standing searches), ``catalog`` / ``index`` /
``schema`` (one index per map), ``query`` / ``plan`` / ``matcher`` (the query language, its
tantivy form and its per-document evaluation), ``analysis``, ``mapspec``, ``state``, ``config``.
Other services use it through ``libs.search_client``.
"""
