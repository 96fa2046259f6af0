"""The walk from one partition table to the next (``rebalance.step``): failover promotes a backup
that holds the data, moves go through staging (new owner as an extra backup) before the owner
flips, nothing flips before the owner reported its replicas synced, and repeated steps converge
to a valid, balanced table. Hypothesis drives it over member sets, departures, joins and
restarts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from libs.cluster.coordination import MemberInfo, decode_table, encode_table
from libs.cluster.coordinator import edge_endpoints
from libs.cluster.partition_table import PartitionTable
from libs.cluster.rebalance import dead_nodes, step
from libs.crdt.hashing import PARTITION_COUNT

NAMES = [f"n{i}" for i in range(6)]
member_sets = st.sets(st.sampled_from(NAMES), min_size=1, max_size=6)


def epochs(names: set[str], restarted: set[str] = frozenset(), base: int = 1000) -> dict[str, int]:  # type: ignore[assignment]
    return {n: base + (1 if n in restarted else 0) for n in names}


def converge(
    table: PartitionTable | None, members: Mapping[str, int], backup_count: int, limit: int = 8
) -> tuple[PartitionTable, int]:
    """Step with every node reporting synced until nothing changes; returns (table, steps)."""
    steps = 0
    while True:
        following = step(table, members, synced=set(members), backup_count=backup_count)
        if table is not None and following.same_layout(table):
            return table, steps
        holders_ok(table, following, members)
        table = following
        steps += 1
        assert steps <= limit, "the steps did not converge"


def holders_ok(
    before: PartitionTable | None, after: PartitionTable, members: Mapping[str, int]
) -> None:
    """Every owner in ``after`` held the partition's data in ``before`` (owner or surviving
    backup), unless no holder of it survived."""
    if before is None:
        return
    dead = dead_nodes(before, members)
    for p in range(PARTITION_COUNT):
        holders = {before.owners[p], *before.backups[p]} - dead
        if holders:
            assert after.owners[p] in holders, f"partition {p} given to a node without its data"


def assert_valid(table: PartitionTable, members: set[str], backup_count: int) -> None:
    assert set(table.owners) <= members
    k = min(backup_count, len(members) - 1)
    for p in range(PARTITION_COUNT):
        b = table.backups[p]
        assert len(b) == k
        assert table.owners[p] not in b
        assert len(set(b)) == len(b)
    counts = Counter(table.owners)
    loads = [counts.get(m, 0) for m in members]
    assert max(loads) - min(loads) <= 1
    assert not table.pending
    assert set(table.epochs) == set(table.nodes)


@settings(max_examples=60, deadline=None)
@given(before=member_sets, after=member_sets, backup_count=st.integers(0, 2))
def test_steps_converge_to_a_valid_balanced_table_without_losing_a_holder(
    before: set[str], after: set[str], backup_count: int
) -> None:
    start, _ = converge(None, epochs(before), backup_count)
    assert_valid(start, before, backup_count)
    final, steps = converge(start, epochs(after), backup_count)
    assert_valid(final, after, backup_count)
    assert final.version == start.version + steps


@settings(max_examples=60, deadline=None)
@given(
    members=st.sets(st.sampled_from(NAMES), min_size=2, max_size=6), backup_count=st.integers(1, 2)
)
def test_a_dead_owner_is_replaced_by_its_first_surviving_backup_in_one_step(
    members: set[str], backup_count: int
) -> None:
    table, _ = converge(None, epochs(members), backup_count)
    victim = sorted(members)[0]
    following = step(table, epochs(members - {victim}), synced=(), backup_count=backup_count)
    for p in range(PARTITION_COUNT):
        if table.owners[p] == victim:
            assert following.owners[p] == table.backups[p][0]
        assert victim not in following.backups[p]
        assert following.owners[p] != victim


@settings(max_examples=60, deadline=None)
@given(members=st.sets(st.sampled_from(NAMES), min_size=1, max_size=5))
def test_a_joiner_is_staged_as_backup_and_owns_nothing_until_the_owners_are_synced(
    members: set[str],
) -> None:
    table, _ = converge(None, epochs(members), 1)
    joiner = next(n for n in NAMES if n not in members)
    everyone = epochs(members | {joiner})
    staged = step(table, everyone, synced=set(members), backup_count=1)
    assert joiner not in staged.owners
    assert staged.pending and set(staged.pending.values()) == {joiner}
    for p in staged.pending:
        assert joiner in staged.backups[p]
        assert staged.owners[p] == table.owners[p]
    # Nobody reported synced with the staged version: nothing flips.
    held = step(staged, everyone, synced=(), backup_count=1)
    assert held.owners == staged.owners
    # Once they did, the staged partitions flip to the joiner, the old owner stays a backup.
    flipped = step(staged, everyone, synced=set(everyone), backup_count=1)
    for p, target in staged.pending.items():
        assert flipped.owners[p] == target
        assert staged.owners[p] in flipped.backups[p]


@settings(max_examples=40, deadline=None)
@given(members=st.sets(st.sampled_from(NAMES), min_size=2, max_size=6))
def test_a_restarted_node_is_a_new_incarnation_and_gets_data_before_ownership(
    members: set[str],
) -> None:
    table, _ = converge(None, epochs(members), 1)
    restarted = sorted(members)[-1]
    now = epochs(members, {restarted})
    following = step(table, now, synced=set(members), backup_count=1)
    for p in range(PARTITION_COUNT):
        # Its old incarnation's partitions went to their backups; it may only be staged.
        assert following.owners[p] != restarted
    assert following.epochs[restarted] == now[restarted] if restarted in following.nodes else True
    final, _ = converge(following, now, 1)
    assert_valid(final, members, 1)


@settings(max_examples=40, deadline=None)
@given(members=st.sets(st.sampled_from(NAMES), min_size=1, max_size=4), cap=st.integers(1, 40))
def test_migrations_in_flight_are_bounded(members: set[str], cap: int) -> None:
    table, _ = converge(None, epochs(members), 1)
    joiners = {n for n in NAMES if n not in members}
    staged = step(table, epochs(members | joiners), synced=(), backup_count=1, max_moves=cap)
    assert 0 < len(staged.pending) <= cap


def test_the_first_table_records_incarnations_addresses_and_endpoints() -> None:
    members = {"a": 11, "b": 22}
    t = step(
        None,
        members,
        addresses={"a": "127.0.0.1:1", "b": "127.0.0.1:2"},
        endpoints={"a": "ws://127.0.0.1:8001", "b": "ws://127.0.0.1:8002"},
    )
    assert t.version == 1 and t.epochs == members
    assert t.addresses == {"a": "127.0.0.1:1", "b": "127.0.0.1:2"}
    assert decode_table(encode_table(t)) == t


def test_table_encoding_round_trips_pending_and_endpoints() -> None:
    t = step(None, {"a": 1, "b": 2}, endpoints={"a": "ws://x:1"})
    staged = step(t, {"a": 1, "b": 2, "c": 3}, synced=())
    assert staged.pending
    assert decode_table(encode_table(staged)) == staged


def test_edge_endpoints_prefer_the_colocated_edge_and_deal_the_rest() -> None:
    storage = {n: MemberInfo(n, "storage", address=f"127.0.0.1:{i}") for i, n in enumerate("abc")}
    edges = {
        "a": MemberInfo("a", "edge", websocket="ws://h:1", meta={"storage": "a"}),
        "x": MemberInfo("x", "edge", websocket="ws://h:9"),
    }
    ends = edge_endpoints(storage, edges)
    assert ends["a"] == "ws://h:1"
    assert set(ends) == {"a", "b", "c"}
    assert {ends["b"], ends["c"]} <= {"ws://h:1", "ws://h:9"}
    assert edge_endpoints(storage, {}) == {}
