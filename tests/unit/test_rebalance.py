"""The rebalancing plan: balance, backup placement and minimal movement, over any member sets."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from libs.cluster.partition_table import PartitionTable
from libs.cluster.rebalance import moves, plan
from libs.crdt.hashing import PARTITION_COUNT

node_ids = st.sampled_from([f"node-{i}" for i in range(8)])
member_sets = st.sets(node_ids, min_size=1, max_size=8)


def assert_valid(table: PartitionTable, members: set[str], backup_count: int) -> None:
    assert set(table.owners) <= members
    expected_backups = min(backup_count, len(members) - 1)
    for p in range(PARTITION_COUNT):
        b = table.backups[p]
        assert len(b) == expected_backups
        assert table.owners[p] not in b, f"partition {p}: backup on its own primary"
        assert len(set(b)) == len(b)
        assert set(b) <= members


def primary_spread(table: PartitionTable, members: set[str]) -> int:
    counts = Counter(table.owners)
    loads = [counts.get(m, 0) for m in members]
    return max(loads) - min(loads)


@settings(max_examples=100, deadline=None)
@given(members=member_sets, backup_count=st.integers(0, 2))
def test_fresh_plan_is_valid_and_balanced(members: set[str], backup_count: int) -> None:
    table = plan(None, members, backup_count=backup_count)
    assert table.version == 1
    assert_valid(table, members, backup_count)
    assert primary_spread(table, members) <= 1


@settings(max_examples=100, deadline=None)
@given(before=member_sets, after=member_sets, backup_count=st.integers(0, 2))
def test_replan_after_membership_change_is_valid_and_balanced(
    before: set[str], after: set[str], backup_count: int
) -> None:
    first = plan(None, before, backup_count=backup_count)
    second = plan(first, after, backup_count=backup_count)
    assert second.version == first.version + 1
    assert_valid(second, after, backup_count)
    assert primary_spread(second, after) <= 1


@settings(max_examples=100, deadline=None)
@given(members=member_sets, backup_count=st.integers(0, 2))
def test_same_members_move_nothing(members: set[str], backup_count: int) -> None:
    first = plan(None, members, backup_count=backup_count)
    second = plan(first, members, backup_count=backup_count)
    assert second.owners == first.owners
    assert second.backups == first.backups
    assert moves(first, second) == []


@settings(max_examples=100, deadline=None)
@given(members=st.sets(node_ids, min_size=1, max_size=7), backup_count=st.integers(0, 2))
def test_a_joining_node_takes_only_its_share(members: set[str], backup_count: int) -> None:
    newcomer = next(f"node-{i}" for i in range(8) if f"node-{i}" not in members)
    first = plan(None, members, backup_count=backup_count)
    second = plan(first, members | {newcomer}, backup_count=backup_count)
    moved = moves(first, second)
    # Every moved primary goes to the newcomer, and it gets no more than its fair share.
    assert all(m.target == newcomer for m in moved)
    assert len(moved) <= -(-PARTITION_COUNT // (len(members) + 1))
    assert all(m.source is not None for m in moved)


@settings(max_examples=100, deadline=None)
@given(members=st.sets(node_ids, min_size=2, max_size=8), backup_count=st.integers(1, 2))
def test_a_leaving_node_moves_only_its_partitions_to_their_backups(
    members: set[str], backup_count: int
) -> None:
    leaver = sorted(members)[0]
    first = plan(None, members, backup_count=backup_count)
    second = plan(first, members - {leaver}, backup_count=backup_count)
    moved = moves(first, second)
    assert {m.partition for m in moved} == {p for p, o in enumerate(first.owners) if o == leaver}
    # A lost primary is replaced by a node that already holds the data (one of its backups),
    # except for the few that rounding of the quotas forces elsewhere: at most one per member.
    copied = [m for m in moved if second.owners[m.partition] not in first.backups[m.partition]]
    assert len(copied) <= len(members) - 1
    assert all(m.source is not None for m in moved)


def test_single_member_owns_everything_without_backups() -> None:
    table = plan(None, ["solo"], backup_count=1)
    assert set(table.owners) == {"solo"}
    assert all(b == () for b in table.backups)
