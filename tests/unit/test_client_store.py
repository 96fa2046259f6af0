"""The SDK's local store: the op log and the replicas survive a reopen, acknowledged ops go,
one process owns a store file, and writes keep TopGun's op shape and a monotonic clock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from libs.client import ClientOptions, ConnectionOptions, TopGunClient
from libs.client._oplog import LocalStore, StoreInUse

OFFLINE = "ws://127.0.0.1:1/ws"
QUIET = ClientOptions(connection=ConnectionOptions(backoff_base=5.0))
VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "msgpack.json").read_text())


def test_ops_and_replicas_survive_a_reopen_and_acks_delete_a_prefix(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = LocalStore(path)
    node = s.node_id()
    ts = {"millis": 5, "counter": 0, "nodeId": node}
    for i in range(1, 6):
        rec = {"value": i, "timestamp": ts}
        blob = s.put_lww("m", f"k{i}", rec)
        s.append_op(i, {"mapName": "m", "opType": "PUT", "key": f"k{i}", "record": rec}, blob)
    s.append_op(
        6, {"mapName": "o", "opType": "OR_REMOVE", "key": "k", "orTag": "t", "timestamp": ts}, None
    )
    rec = {"value": "v", "timestamp": {"millis": 5, "counter": 0, "nodeId": node}, "tag": "5:0:n"}
    s.put_or("o", "k", rec)
    s.add_tombstone("o", "old-tag", "k")
    s.commit()
    s.ack_through(3)
    s.close()

    s2 = LocalStore(path)
    assert s2.node_id() == node
    pending = dict(s2.pending_ops())
    assert list(pending) == [4, 5, 6]
    assert pending[5] == {
        "mapName": "m",
        "opType": "PUT",
        "key": "k5",
        "record": {"value": 5, "timestamp": ts},
        "timestamp": ts,
        "id": "5",
    }
    assert pending[6]["orTag"] == "t" and pending[6]["timestamp"] == ts
    assert s2.max_op_id() == 6
    assert dict(s2.load_lww("m"))["k1"]["value"] == 1
    assert [r["tag"] for _, r in s2.load_or("o")] == ["5:0:n"]
    assert s2.load_tombstones("o") == [("old-tag", "k")]
    s2.close()


def test_op_ids_keep_increasing_after_every_op_was_acknowledged(tmp_path: Path) -> None:
    s = LocalStore(tmp_path / "s.db")
    s.append_op(7, {"mapName": "m", "opType": "REMOVE", "key": "k", "timestamp": {}}, None)
    s.commit()
    s.ack_through(7)
    s.close()
    s2 = LocalStore(tmp_path / "s.db")
    assert list(s2.pending_ops()) == []
    assert s2.max_op_id() == 7
    s2.close()


def test_a_store_file_is_owned_by_one_client_at_a_time(tmp_path: Path) -> None:
    s = LocalStore(tmp_path / "s.db")
    s.node_id()
    with pytest.raises(StoreInUse):
        LocalStore(tmp_path / "s.db", lock_timeout=0.05)
    s.close()
    LocalStore(tmp_path / "s.db").close()


def test_clear_map_drops_its_replica_but_keeps_buffered_rows_of_other_maps(
    tmp_path: Path,
) -> None:
    s = LocalStore(tmp_path / "s.db")
    ts = {"millis": 1, "counter": 0, "nodeId": "n"}
    s.put_lww("a", "k", {"value": 1, "timestamp": ts})
    s.put_lww("b", "k", {"value": 2, "timestamp": ts})
    s.commit()
    s.put_lww("a", "k2", {"value": 3, "timestamp": ts})
    s.clear_map("a")
    s.put_lww("a", "k3", {"value": 4, "timestamp": ts})
    s.commit()
    assert [k for k, _ in s.load_lww("a")] == ["k3"]
    assert [k for k, _ in s.load_lww("b")] == ["k"]
    s.close()


async def test_writes_carry_the_op_fields_topguns_client_sends() -> None:
    sent = VECTORS["client_session"][1]["messages"][0]["json"]["payload"]["ops"]
    async with TopGunClient(OFFLINE, options=QUIET) as c:
        put = c.lww_map("users").set("user-1", {"name": "Alice"})
        rm = c.lww_map("users").remove("user-2")
        add = c.or_map("tags").add("post-1", "red")
        (orm,) = c.or_map("tags").remove_value("post-1", "red")
        bodies = list(c.outbox.bodies())
    by_type = {b["opType"]: b for b in bodies}
    for theirs in sent:
        ours = by_type[theirs["opType"]]
        assert set(ours) >= set(theirs) - {"synced"}, theirs["opType"]
        assert isinstance(ours["id"], str)
    assert [put.id, rm.id, add.id, orm.id] == [1, 2, 3, 4]
    assert by_type["OR_REMOVE"]["orTag"] == by_type["OR_ADD"]["orRecord"]["tag"]
    assert by_type["REMOVE"]["record"]["value"] is None


async def test_clock_and_op_ids_move_forward_across_a_restart(tmp_path: Path) -> None:
    store = tmp_path / "c.db"
    async with TopGunClient(OFFLINE, store=store, options=QUIET) as c:
        m = c.lww_map("m")
        for i in range(20):
            m.set("k", i)
        first = m.record("k")
        node = c.node_id
    async with TopGunClient(OFFLINE, store=store, options=QUIET) as c2:
        assert c2.node_id == node
        assert c2.pending_ops == 20
        m2 = c2.lww_map("m")
        assert m2.get("k") == 19
        op = m2.set("k", "after")
        assert op.id == 21
        after = m2.record("k")
        assert first is not None and after is not None
        assert after.timestamp > first.timestamp


async def test_lww_map_reads_hide_tombstones_and_report_visible_entries() -> None:
    async with TopGunClient(OFFLINE, options=QUIET) as c:
        m = c.lww_map("m")
        m.set("a", 1)
        m.set("b", 2)
        m.remove("a")
        assert m.get("a") is None and m.get("a", "dflt") == "dflt"
        assert m.items() == [("b", 2)]
        assert len(m) == 1 and "b" in m and "a" not in m
        assert m.record("a") is not None  # the tombstone is kept for sync
        with pytest.raises(ValueError):
            m.set("c", None)
        with pytest.raises(TypeError):
            c.or_map("m")
