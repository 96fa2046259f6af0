"""Computing the next partition table when the members change.

Pure and deterministic: the coordinator calls ``plan(previous, members)`` and writes the result
as a compare-and-set in the table store. Goals, in order:

1. **Correct**: every partition has one owner among the members; backups are distinct members
   other than the owner (as many as ``backup_count`` allows with the members available).
2. **Balanced**: primaries differ by at most one between members; backups likewise as far as
   placement allows.
3. **Minimal movement**: a partition keeps its owner while that owner is a member and under its
   quota; a lost owner is replaced by a surviving backup (which already holds the data) before
   anyone else; surplus partitions go first to members that back them up.

``plan`` is where the cluster should end up; ``step`` is the next table on the way there that
loses nothing. A table may only name as owner a node that holds the partition's data, so the
coordinator walks from one to the other in versions:

- **failover**: an owner that is gone (its membership expired, or it restarted as a new
  incarnation) is replaced at once by its first surviving backup (backups are listed oldest
  first, so the first one has been receiving the owner's writes longest);
- **staging**: a partition that should move gets its new owner as an extra backup (and is listed
  in ``pending``); the owner starts replicating to it, and a replica that starts empty is
  resynced from the owner's store, i.e. it receives a snapshot and then the live changes;
- **flip**: once the owner reports that its replicas caught up with the staged version
  (``synced``), the new owner takes over; the old one stays a backup;
- **trim**: once the owner of a partition is synced, backups beyond the plan are dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from libs.cluster.partition_table import NodeId, PartitionTable
from libs.crdt.hashing import PARTITION_COUNT


@dataclass(frozen=True, slots=True)
class Move:
    """One partition whose primary changes; ``source`` is where its data can be copied from."""

    partition: int
    source: NodeId | None  # previous owner if still a member, else a surviving backup, else None
    target: NodeId


def _quotas(
    members: list[NodeId], current_counts: Mapping[NodeId, int], total: int
) -> dict[str, int]:
    """Primaries each member should hold: ``total // n`` or one more; the extra ones go to the
    members that hold the most already, so fewer partitions move."""
    n = len(members)
    base, extra = divmod(total, n)
    by_load = sorted(members, key=lambda m: (-current_counts.get(m, 0), m))
    return {m: base + (1 if i < extra else 0) for i, m in enumerate(by_load)}


def plan(
    previous: PartitionTable | None,
    members: Iterable[NodeId],
    *,
    backup_count: int = 1,
    addresses: Mapping[NodeId, str] | None = None,
) -> PartitionTable:
    """The table that should follow ``previous`` for this member set (version + 1)."""
    ring = sorted(set(members))
    if not ring:
        raise ValueError("a partition table needs at least one member")
    member_set = set(ring)
    version = (previous.version if previous else 0) + 1
    addrs = dict(addresses if addresses is not None else (previous.addresses if previous else {}))

    prev_owners: list[NodeId | None] = (
        list(previous.owners) if previous else [None] * PARTITION_COUNT
    )
    prev_backups: list[tuple[NodeId, ...]] = (
        list(previous.backups) if previous else [()] * PARTITION_COUNT
    )

    # 1. Keep owners that are still members.
    owners: list[NodeId | None] = [None] * PARTITION_COUNT
    counts = dict.fromkeys(ring, 0)
    for p, o in enumerate(prev_owners):
        if o in member_set:
            owners[p] = o
            counts[o] += 1
    quotas = _quotas(ring, counts, PARTITION_COUNT)

    # 2. Members over quota give up their surplus, preferring partitions another member backs up.
    for m in ring:
        surplus = counts[m] - quotas[m]
        if surplus <= 0:
            continue
        mine = [p for p in range(PARTITION_COUNT) if owners[p] == m]
        mine.sort(key=lambda p: (not any(b in member_set for b in prev_backups[p]), p))
        for p in mine[:surplus]:
            owners[p] = None
            counts[m] -= 1

    # 3. Give every unowned partition to a member under quota, a backup of it first.
    def under_quota() -> list[NodeId]:
        return [m for m in ring if counts[m] < quotas[m]]

    for p in range(PARTITION_COUNT):
        if owners[p] is not None:
            continue
        candidates = under_quota()
        preferred = [b for b in prev_backups[p] if b in candidates]
        pick = preferred[0] if preferred else min(candidates, key=lambda m: (counts[m], m))
        owners[p] = pick
        counts[pick] += 1

    final_owners: list[NodeId] = [o for o in owners if o is not None]
    assert len(final_owners) == PARTITION_COUNT

    # 4. Backups: keep surviving ones, then the previous owner (it holds the data), then the
    #    members backing up this owner least (so a lost owner's partitions spread over many
    #    survivors), then the least loaded; never the owner itself.
    k = min(backup_count, len(ring) - 1)
    backup_load = dict.fromkeys(ring, 0)
    pairs: Counter[tuple[NodeId, NodeId]] = Counter()
    backup_cap = -(-PARTITION_COUNT * k // len(ring)) if k else 0
    backups: list[tuple[NodeId, ...]] = []
    for p in range(PARTITION_COUNT):
        owner = final_owners[p]
        chosen: list[NodeId] = []
        for cand in (*prev_backups[p], prev_owners[p]):
            if (
                len(chosen) < k
                and cand in member_set
                and cand != owner
                and cand not in chosen
                and backup_load[cand] < backup_cap
            ):
                chosen.append(cand)
                backup_load[cand] += 1
                pairs[owner, cand] += 1
        while len(chosen) < k:
            cand = min(
                (m for m in ring if m != owner and m not in chosen),
                key=lambda m: (pairs[owner, m], backup_load[m], m),
            )
            chosen.append(cand)
            backup_load[cand] += 1
            pairs[owner, cand] += 1
        backups.append(tuple(chosen))

    return PartitionTable(version, tuple(final_owners), tuple(backups), addrs)


def moves(previous: PartitionTable | None, following: PartitionTable) -> list[Move]:
    """The partitions whose primary changes between two tables, with a data source for each."""
    out: list[Move] = []
    members = set(following.nodes)
    for p in range(PARTITION_COUNT):
        target = following.owners[p]
        before = previous.owners[p] if previous else None
        if before == target:
            continue
        source: NodeId | None = None
        if before is not None and before in members:
            source = before
        elif previous is not None:
            source = next((b for b in previous.backups[p] if b in members), None)
        out.append(Move(p, source, target))
    return out


def _unique(nodes: Iterable[NodeId], exclude: NodeId) -> tuple[NodeId, ...]:
    return tuple(n for n in dict.fromkeys(nodes) if n != exclude)


def dead_nodes(current: PartitionTable, members: Mapping[NodeId, int]) -> set[NodeId]:
    """Nodes of ``current`` that are gone: not a member, or a member with another incarnation."""
    return {
        n
        for n in current.nodes
        if n not in members or current.epochs.get(n, members[n]) != members[n]
    }


def step(
    current: PartitionTable | None,
    members: Mapping[NodeId, int],
    *,
    synced: Collection[NodeId] = (),
    backup_count: int = 1,
    addresses: Mapping[NodeId, str] | None = None,
    endpoints: Mapping[NodeId, str] | None = None,
    max_moves: int = PARTITION_COUNT,
) -> PartitionTable:
    """The next table from ``current`` toward ``plan`` for ``members`` (node -> incarnation).

    ``synced`` are the nodes that reported every replica of their partitions caught up with
    ``current``'s version; only their partitions flip owner or drop backups. At most
    ``max_moves`` partitions migrate at a time. Returns a table with ``current.version + 1``
    (compare with ``same_layout`` to see whether anything changed).
    """
    if not members:
        raise ValueError("a partition table needs at least one member")
    addrs = dict(addresses if addresses is not None else (current.addresses if current else {}))
    ends = dict(endpoints if endpoints is not None else (current.endpoints if current else {}))
    if current is None:
        first = plan(None, members, backup_count=backup_count, addresses=addrs)
        return _finish(first.version, first.owners, first.backups, members, addrs, ends, {})

    dead = dead_nodes(current, members)
    target = plan(current, members, backup_count=backup_count)
    synced_set = set(synced)
    owners: list[NodeId] = []
    backups: list[tuple[NodeId, ...]] = []
    pending: dict[int, NodeId] = {}
    moving = sum(
        1
        for p, o in enumerate(current.owners)
        if o not in dead and target.owners[p] != o and target.owners[p] in current.backups[p]
    )
    budget = max(0, max_moves - moving)
    for p in range(PARTITION_COUNT):
        old = current.owners[p]
        new = target.owners[p]
        tb = target.backups[p]
        alive_backups = [b for b in current.backups[p] if b not in dead]
        if old in dead:
            # Failover: the first surviving backup has the data; with none left, the planned
            # owner starts from whatever it holds (its own store after a whole-cluster restart).
            owner = alive_backups[0] if alive_backups else new
            extra = [new] if new != owner else []
            bs = _unique([*alive_backups, *extra, *tb], owner)
            if new != owner:
                pending[p] = new
        elif old == new:
            owner = old
            if old in synced_set and set(tb) <= set(alive_backups):
                bs = tuple(tb)
            else:
                bs = _unique([*alive_backups, *tb], owner)
        elif new in alive_backups and old in synced_set:
            # Flip: the new owner has been a replica through a whole synced version.
            owner = new
            bs = _unique([old, *alive_backups, *tb], owner)
        elif new in alive_backups or budget > 0:
            if new not in alive_backups:
                budget -= 1
            owner = old
            bs = _unique([*alive_backups, new, *tb], owner)
            pending[p] = new
        else:
            owner = old
            bs = _unique([*alive_backups, *[b for b in tb if b in current.backups[p]]], owner)
        owners.append(owner)
        backups.append(bs)
    return _finish(
        current.version + 1, tuple(owners), tuple(backups), members, addrs, ends, pending
    )


def _finish(
    version: int,
    owners: tuple[NodeId, ...],
    backups: tuple[tuple[NodeId, ...], ...],
    members: Mapping[NodeId, int],
    addresses: Mapping[NodeId, str],
    endpoints: Mapping[NodeId, str],
    pending: Mapping[int, NodeId],
) -> PartitionTable:
    nodes = set(owners)
    for bs in backups:
        nodes.update(bs)
    return PartitionTable(
        version,
        owners,
        backups,
        {n: a for n, a in addresses.items() if n in nodes},
        {n: members[n] for n in sorted(nodes) if n in members},
        {n: e for n, e in endpoints.items() if n in nodes},
        dict(sorted(pending.items())),
    )
