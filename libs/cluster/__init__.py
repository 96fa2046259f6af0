"""Cluster-wide shared pieces: the partition table, the rebalancing plan and its steps, the
coordination store in NATS JetStream (membership, coordinator lease, table), the member agent,
the coordinator, the fan-out subjects and the bundled nats-server."""

from libs.cluster.coordination import (
    Coordination,
    MemberInfo,
    StoreUnavailable,
    decode_table,
    encode_table,
    member_key,
)
from libs.cluster.coordinator import (
    STORAGE_META,
    SYNCED_META,
    Coordinator,
    edge_endpoints,
    synced_nodes,
)
from libs.cluster.membership import ClusterMember, MembersView
from libs.cluster.nats_server import NatsServer, nats_server_binary, start_nats_server
from libs.cluster.partition_table import NodeId, PartitionId, PartitionTable
from libs.cluster.rebalance import Move, dead_nodes, moves, plan, step
from libs.cluster.subjects import (
    MAX_PAYLOAD,
    broadcast_subject,
    changes_subject,
    changes_wildcard,
    map_of_token,
    map_token,
)

__all__ = [
    "MAX_PAYLOAD",
    "STORAGE_META",
    "SYNCED_META",
    "ClusterMember",
    "Coordination",
    "Coordinator",
    "MemberInfo",
    "MembersView",
    "Move",
    "NatsServer",
    "NodeId",
    "PartitionId",
    "PartitionTable",
    "StoreUnavailable",
    "broadcast_subject",
    "changes_subject",
    "changes_wildcard",
    "dead_nodes",
    "decode_table",
    "edge_endpoints",
    "encode_table",
    "map_of_token",
    "map_token",
    "member_key",
    "moves",
    "nats_server_binary",
    "plan",
    "start_nats_server",
    "step",
    "synced_nodes",
]
