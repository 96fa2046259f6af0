"""The blocking facade and the command line, against the fake edge running on its own thread."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import topgun
from libs.client import cli
from tests.unit.test_client_fake_edge import FakeEdge

ROOT = Path(__file__).resolve().parents[2]
FAST = topgun.ClientOptions(
    connection=topgun.ConnectionOptions(backoff_base=0.02, backoff_max=0.1, device_grace=0.05)
)


class EdgeThread:
    """A FakeEdge served by an event loop on its own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.edge = FakeEdge()
        asyncio.run_coroutine_threadsafe(self.edge.start(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.edge.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def edge() -> Iterator[FakeEdge]:
    et = EdgeThread()
    try:
        yield et.edge
    finally:
        et.stop()


def test_blocking_client_writes_reads_and_queries(edge: FakeEdge) -> None:
    with topgun.connect(edge.url, options=FAST) as c:
        assert c.status is topgun.Status.READY
        todos = c.lww_map("todos")
        todos.set("t1", {"title": "milk", "done": False})
        todos.set("t2", {"title": "eggs", "done": True})
        assert todos.get("t1") == {"title": "milk", "done": False}
        assert todos.flush(5) == "APPLIED"
        res = c.query_once("todos", where={"done": False})
        assert res.keys() == ["t1"]
        assert len(todos) == 2


def test_blocking_live_query_and_topics_between_two_clients(edge: FakeEdge) -> None:
    with topgun.connect(edge.url, options=FAST) as a, topgun.connect(edge.url, options=FAST) as b:
        q = b.query("items", where={"kind": "x"})
        assert q.ready(5).rows == ()
        changes = q.changes()
        sub = b.subscribe("news")
        a.lww_map("items").set("i1", {"kind": "x"})
        a.lww_map("items").flush(5)
        first = next(iter(changes))
        assert (first.kind, first.key) == ("UPDATE", "i1")  # the fake reports every match as UPDATE
        a.publish("news", {"n": 1})
        assert sub.get(5).data == {"n": 1}
        sub.close()
        q.close()


def test_connect_returns_offline_when_the_server_is_unreachable(tmp_path: Path) -> None:
    store = tmp_path / "offline.db"
    c = topgun.connect("ws://127.0.0.1:1/ws", store=store, options=FAST, wait=0.2)
    try:
        assert c.status is not topgun.Status.READY
        c.lww_map("m").set("k", 1)
        assert c.pending_ops == 1
    finally:
        c.close()


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "topgun", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_cli_put_get_and_query(edge: FakeEdge) -> None:
    r = run_cli("--url", edge.url, "put", "todos", "t1", '{"title": "milk", "n": 2}')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ok"] is True
    r = run_cli("--url", edge.url, "get", "todos", "t1")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"title": "milk", "n": 2}
    r = run_cli("--url", edge.url, "query", "todos", "--where", "n=2", "--fields", "title")
    assert [json.loads(line) for line in r.stdout.splitlines()] == [
        {"key": "t1", "value": {"title": "milk"}}
    ]
    r = run_cli("--url", edge.url, "get", "todos", "nope")
    assert r.returncode == 1


@pytest.mark.parametrize(
    "command", ["put", "get", "remove", "query", "watch", "publish", "subscribe"]
)
def test_cli_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: python -m topgun " + command in capsys.readouterr().out


def test_cli_refuses_a_value_that_is_not_json(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(["put", "m", "k", "{not json"])
    assert exit_info.value.code == 2
    assert "not JSON" in capsys.readouterr().err
