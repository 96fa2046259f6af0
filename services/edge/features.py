"""The feature modules an edge installs at start-up, in order. Each has ``install(edge)``, which
registers its message handlers (``edge.dispatcher.add``) and starts what it needs.

A new feature (search, DAG queries, ...) lives in its own module and adds one line here.
"""

FEATURES: tuple[str, ...] = (
    "services.edge.basics",
    "services.edge.writes",
    "services.edge.change_feed",
    "services.edge.broadcasts",
    "services.edge.live_queries",
    "services.edge.merkle_sync",
    "services.edge.topics",
    "services.edge.counters",
    "services.edge.nats_fanout",
    "services.edge.cluster_view",
    "services.edge.search",
)
