"""Offline writes with the Python SDK: write while the server is down, restart, watch them arrive.

    .venv/bin/python examples/offline_writes.py

The script starts TopGun-py itself (``python -m services.up`` on a free port, data in a temporary
folder), then:

1. a writer and a watcher connect; the watcher has a live query on ``todos``;
2. the server is stopped; the writer keeps writing, reads its writes back at once, and exits;
   the writes wait in its store file;
3. the server starts again on the same port; the writer process comes back with the same store
   file, and its queued writes reach the server and show up in the watcher's live query.
"""

from __future__ import annotations

import asyncio
import os
import re
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import topgun  # noqa: E402

FAST_RECONNECT = topgun.ClientOptions(
    connection=topgun.ConnectionOptions(backoff_base=0.2, backoff_max=1.0)
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, data_dir: str) -> subprocess.Popen[bytes]:
    """Start the launcher and wait for its ``PORT=`` line."""
    env = {**os.environ, "TOPGUN_NO_AUTH": "1", "TOPGUN_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.up", "--port", str(port), "--data-dir", data_dir],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 90
    buf = b""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        if sel.select(0.2):
            buf += os.read(proc.stdout.fileno(), 4096)
            if re.search(rb"^PORT=\d+\s*$", buf, re.M):
                return proc
    proc.kill()
    raise SystemExit("the server did not start within 90 s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def print_changes(q: topgun.LiveQuery, until: int) -> None:
    seen = 0
    async for change in q.changes():
        print(f"   watcher: {change.kind:6} {change.key} {change.value}")
        seen += 1
        if seen == until:
            return


async def main() -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ws"
    with tempfile.TemporaryDirectory(prefix="topgun-example-") as tmp:
        data_dir, store = str(Path(tmp) / "data"), str(Path(tmp) / "writer.db")
        print(f"1. starting the server on {url}")
        server = start_server(port, data_dir)
        try:
            async with topgun.TopGunClient(url, options=FAST_RECONNECT) as watcher:
                q = watcher.query("todos", where={"done": False})
                await q.ready(30)
                online = asyncio.create_task(print_changes(q, 2))
                async with topgun.TopGunClient(url, store=store, options=FAST_RECONNECT) as w:
                    todos = w.lww_map("todos")
                    todos.set("t1", {"title": "buy milk", "done": False})
                    todos.set("t2", {"title": "call mum", "done": False})
                    await todos.flush(30)
                    print("   writer: 2 writes acknowledged by the server")
                    await asyncio.wait_for(online, 30)

                    print("2. stopping the server")
                    stop_server(server)
                    await w.wait_for_status(topgun.Status.OFFLINE, 30)
                    for i in range(3, 6):
                        todos.set(f"t{i}", {"title": f"offline task {i}", "done": False})
                    print(f"   writer: status {w.status}, {w.pending_ops} writes queued")
                    print(f"   writer: reads its own writes at once: {todos.get('t5')}")
                print(f"   writer: exited; its writes wait in {Path(store).name}")

                print("3. starting the server again on the same port")
                server = start_server(port, data_dir)
                arriving = asyncio.create_task(print_changes(q, 3))
                async with topgun.TopGunClient(url, store=store, options=FAST_RECONNECT) as w2:
                    print(f"   writer (new process): {w2.pending_ops} queued writes found")
                    await w2.flush(60)
                    print("   writer: the queued writes are acknowledged")
                await asyncio.wait_for(arriving, 30)
                rows = (await watcher.query_once("todos", where={"done": False})).keys()
                print(f"   server now holds: {rows}")
        finally:
            stop_server(server)


if __name__ == "__main__":
    asyncio.run(main())
