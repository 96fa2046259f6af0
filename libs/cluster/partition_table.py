"""The partition table: which storage node owns (and backs up) each of the 271 partitions.

Pure and synchronous. ``PartitionTable.static`` builds the table a launcher uses when it starts a
fixed set of nodes; the cluster coordinator replaces it with versioned tables in NATS JetStream.

Besides owners and backups a cluster table carries what every reader of it needs to act alone:

- ``addresses``: node -> gRPC ``host:port``;
- ``epochs``: node -> the start time (ms) of the process incarnation the table means. A node that
  restarted is a different incarnation: it serves nothing of a table that names its old one
  (fencing), and the coordinator treats the old incarnation as gone;
- ``endpoints``: node -> the WebSocket URL of the edge in front of it (for PARTITION_MAP);
- ``pending``: partition -> the node it is migrating to (that node is already a backup of it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from libs.crdt.hashing import PARTITION_COUNT

PartitionId = int
NodeId = str


@dataclass(frozen=True, slots=True)
class PartitionTable:
    version: int
    owners: tuple[NodeId, ...]  # owners[p] is the primary of partition p
    backups: tuple[tuple[NodeId, ...], ...]  # backups[p] are its backups, in promotion order
    addresses: Mapping[NodeId, str] = field(default_factory=dict)  # node -> "host:port" (gRPC)
    epochs: Mapping[NodeId, int] = field(default_factory=dict)  # node -> incarnation (start ms)
    endpoints: Mapping[NodeId, str] = field(default_factory=dict)  # node -> ws:// of its edge
    pending: Mapping[PartitionId, NodeId] = field(default_factory=dict)  # migrating to

    def __post_init__(self) -> None:
        if len(self.owners) != PARTITION_COUNT or len(self.backups) != PARTITION_COUNT:
            raise ValueError(f"a partition table has exactly {PARTITION_COUNT} entries")

    @classmethod
    def static(
        cls,
        nodes: Sequence[NodeId],
        *,
        backup_count: int = 1,
        addresses: Mapping[NodeId, str] | None = None,
        version: int = 1,
    ) -> PartitionTable:
        """Round-robin primaries over the nodes (sorted), backups on the next nodes of the ring."""
        ring = sorted(set(nodes))
        if not ring:
            raise ValueError("a partition table needs at least one node")
        n = len(ring)
        k = min(backup_count, n - 1)
        owners = tuple(ring[p % n] for p in range(PARTITION_COUNT))
        backups = tuple(
            tuple(ring[(p + 1 + i) % n] for i in range(k)) for p in range(PARTITION_COUNT)
        )
        return cls(version, owners, backups, dict(addresses or {}))

    @property
    def nodes(self) -> tuple[NodeId, ...]:
        seen = dict.fromkeys(self.owners)
        for b in self.backups:
            seen.update(dict.fromkeys(b))
        return tuple(sorted(seen))

    def owner(self, partition: PartitionId) -> NodeId:
        return self.owners[partition]

    def primaries_of(self, node: NodeId) -> list[PartitionId]:
        return [p for p, o in enumerate(self.owners) if o == node]

    def backups_of(self, node: NodeId) -> list[PartitionId]:
        return [p for p, b in enumerate(self.backups) if node in b]

    def same_layout(self, other: PartitionTable) -> bool:
        """True when both tables say the same thing (everything but the version)."""
        return (
            self.owners == other.owners
            and self.backups == other.backups
            and dict(self.addresses) == dict(other.addresses)
            and dict(self.epochs) == dict(other.epochs)
            and dict(self.endpoints) == dict(other.endpoints)
            and dict(self.pending) == dict(other.pending)
        )

    def counts(self) -> dict[NodeId, tuple[int, int]]:
        """Per node: (primaries, backups)."""
        out = {n: [0, 0] for n in self.nodes}
        for o in self.owners:
            out[o][0] += 1
        for bs in self.backups:
            for b in bs:
                out[b][1] += 1
        return {n: (c[0], c[1]) for n, c in out.items()}

    def group_by_owner(self, partitions: Iterable[PartitionId]) -> dict[NodeId, list[int]]:
        """Indices of ``partitions`` grouped by the owner of each partition."""
        groups: dict[NodeId, list[int]] = {}
        owners = self.owners
        for i, p in enumerate(partitions):
            groups.setdefault(owners[p], []).append(i)
        return groups
