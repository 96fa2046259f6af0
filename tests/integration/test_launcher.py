"""The launcher (`python -m services.up`, behind `make up`) and the TopGun server process contract:
``--port`` (0 = any), ``PORT=<n>`` on stdout once ready and nothing else but the banner,
``STORAGE_BACKEND=null``, ``TOPGUN_NO_AUTH``, SIGTERM stops every child, a restart on the same port
works at once, and a child that dies takes the whole system down instead of leaving it half-up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT, free_port, start_service, wait_for
from tests.support.wsclient import WsClient, lww_put

pytestmark = pytest.mark.integration


def children_of(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def module_of(pid: int) -> str:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return args[args.index(b"-m") + 1].decode() if b"-m" in args else ""


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has exited


def test_help_describes_the_launcher_and_the_edge() -> None:
    for module in ("services.up", "services.edge"):
        out = subprocess.run(
            [sys.executable, "-m", module, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0 and "--port" in out.stdout, module


async def test_process_contract_port_zero_no_auth_null_storage_and_clean_sigterm() -> None:
    svc = start_service(
        "services.up",
        ["--port", "0"],
        env={"STORAGE_BACKEND": "null", "TOPGUN_NO_AUTH": "true", "JWT_SECRET": ""},
        ready_timeout=90,
    )
    try:
        banner, port_line = svc.stdout_lines
        assert (
            banner.startswith("TopGun-py is up: ws://127.0.0.1:")
            and port_line == f"PORT={svc.port}"
        )
        kids = children_of(svc.proc.pid)
        modules = sorted(module_of(k) for k in kids)
        assert modules.count("services.storage") == 3 and modules.count("services.edge") == 1
        c = await WsClient.connect(f"ws://localhost:{svc.port}/ws")
        try:
            await c.expect_none("AUTH_REQUIRED", within=0.3)
            assert (await c.ping())["type"] == "PONG"
        finally:
            await c.close()
    finally:
        code = svc.stop(timeout=15)
    assert code == 0
    wait_for(lambda: all(gone(k) for k in kids), timeout=10)


async def test_sqlite_data_survives_a_restart_on_the_same_port_and_a_dead_child_stops_all(
    tmp_path: Path,
) -> None:
    port = free_port()
    # one storage node keeps two start-ups cheap; the contract is the same with three
    args = ["--port", str(port), "--data-dir", str(tmp_path), "--storage-nodes", "1"]
    env = {"TOPGUN_NO_AUTH": "1", "STORAGE_BACKEND": "", "JWT_SECRET": ""}
    first = start_service("services.up", args, env=env, ready_timeout=90)
    try:
        c = await WsClient.connect(f"ws://127.0.0.1:{port}/ws")
        try:
            await c.write(lww_put("durable", "k", {"kept": True}))
        finally:
            await c.close()
    finally:
        assert first.stop(timeout=15) == 0
    assert list(tmp_path.glob("*.sqlite3"))

    second = start_service("services.up", args, env=env, ready_timeout=90)
    try:
        assert second.port == port
        c = await WsClient.connect(f"ws://127.0.0.1:{port}/ws")
        try:
            assert await c.query("durable") == [{"key": "k", "value": {"kept": True}}]
        finally:
            await c.close()
        kids = children_of(second.proc.pid)
        storage_child = next(
            k for k in kids if b"services.storage" in Path(f"/proc/{k}/cmdline").read_bytes()
        )
        os.kill(storage_child, signal.SIGKILL)
        assert second.proc.wait(timeout=20) != 0
        wait_for(lambda: all(gone(k) for k in kids), timeout=10)
    finally:
        second.stop()
