"""Offline writes end to end: the launcher goes down, clients keep writing (one of them in a
separate SDK process that exits before the server is back), the launcher comes back on the
same port, and every write reaches the server and the other client."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import topgun
from tests.integration.test_sdk_proxy import LAUNCHER_ENV, launcher_url, sdk
from tests.support.processes import ROOT, free_port, start_service
from tests.support.wsclient import WsClient
from tests.unit.test_client_fake_edge import wait_until

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    import topgun

    async def main(url, store):
        async with topgun.TopGunClient(url, store=store) as c:
            m = c.lww_map("offline")
            for i in range(10):
                m.set(f"child-{i}", {"from": "child", "i": i})
            assert c.pending_ops == 10
        print("wrote 10")

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_offline_writes_reach_the_server_and_the_other_client_across_restarts(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = launcher_url(port)
    first = start_service("services.up", ["--port", str(port)], env=LAUNCHER_ENV, ready_timeout=90)
    server_up = True
    try:
        async with sdk(url, store=tmp_path / "a.db") as a, sdk(url) as b:
            ma, mb = a.lww_map("offline"), b.lww_map("offline")
            await a.wait_ready(15)
            await b.wait_ready(15)

            first.stop()
            server_up = False
            await wait_until(lambda: a.status is topgun.Status.OFFLINE, 15)
            for i in range(20):
                ma.set(f"a-{i}", {"from": "a", "i": i})
            ma.remove("a-0")
            assert a.pending_ops == 21
            assert ma.get("a-5") == {"from": "a", "i": 5}  # readable at once, offline

            # Another SDK process writes to its own store while the server is down, and exits.
            child_store = tmp_path / "child.db"
            done = subprocess.run(
                [sys.executable, "-c", CHILD, url, str(child_store)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            assert "wrote 10" in done.stdout

            second = start_service(
                "services.up", ["--port", str(port)], env=LAUNCHER_ENV, ready_timeout=90
            )
            try:
                await a.flush(30)
                # The child's writes: a new process reopens the child's store and sends them.
                async with sdk(url, store=child_store) as again:
                    assert again.pending_ops == 10
                    await again.flush(30)
                async with await WsClient.connect(url) as raw:
                    rows = {r["key"]: r["value"] for r in await raw.query("offline")}
                assert len(rows) == 29 and "a-0" not in rows
                assert rows["child-3"] == {"from": "child", "i": 3}

                await wait_until(lambda: len(mb) == 29, 30)
                assert mb.get("a-7") == {"from": "a", "i": 7}
                assert mb.get("child-9") == {"from": "child", "i": 9}
                assert mb.get("a-0") is None
                await wait_until(lambda: ma.root_hash == mb.root_hash, 15)
            finally:
                second.stop()
    finally:
        if server_up:
            first.stop()
