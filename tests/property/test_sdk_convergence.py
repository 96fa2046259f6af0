"""Property: whatever the interleaving of local writes, writes by another client and network
failures, an SDK replica ends with the server's Merkle root and the server's values.

Runs against the real launcher, with a proxy between client and edge that can close the
connection (``cut``, refusing reconnects until ``restore``) or let the link die silently
(``stall``: frames in flight are lost, as when a network fails under a TCP connection). The
scenarios are short (at most 12 steps over 4 keys) so that an example takes a fraction of a
second.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.test_sdk_e2e import server_root
from tests.integration.test_sdk_proxy import WsProxy, edge_url, sdk
from tests.support.wsclient import WsClient, lww_put, lww_remove
from tests.unit.test_client_fake_edge import wait_until

__all__ = ["edge_url"]

KEYS = st.integers(0, 3).map(lambda i: f"k{i}")
STEP = st.one_of(
    st.tuples(st.just("put"), KEYS, st.integers(0, 99)),
    st.tuples(st.just("remove"), KEYS, st.just(0)),
    st.tuples(st.just("remote_put"), KEYS, st.integers(100, 199)),
    st.tuples(st.just("remote_remove"), KEYS, st.just(0)),
    st.tuples(st.just("cut"), st.just(""), st.just(0)),
    st.tuples(st.just("stall"), st.just(""), st.just(0)),
    st.tuples(st.just("restore"), st.just(""), st.just(0)),
)


async def scenario(url: str, steps: list[tuple[str, str, int]]) -> None:
    name = f"prop-{uuid.uuid4().hex[:8]}"
    async with WsProxy(url) as proxy, sdk(proxy.url) as c, await WsClient.connect(url) as other:
        m = c.lww_map(name)
        await c.wait_ready(15)
        for kind, key, value in steps:
            if kind == "put":
                m.set(key, {"v": value})
            elif kind == "remove":
                m.remove(key)
            elif kind == "remote_put":
                await other.write(lww_put(name, key, {"v": value}))
            elif kind == "remote_remove":
                await other.write(lww_remove(name, key))
            elif kind == "cut":
                await proxy.cut()
            elif kind == "stall":
                proxy.stall()
            else:
                await proxy.restore()
            await asyncio.sleep(0)  # let frames already received be handled between steps
        await proxy.restore()
        await c.flush(30)
        await c.wait_ready(30)
        root = await server_root(url, name)
        rows: dict[str, Any] = {r["key"]: r["value"] for r in await other.query(name)}

        await wait_until(lambda: m.root_hash == root, 15)
        assert m.to_dict() == rows


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(STEP, min_size=1, max_size=12))
def test_replica_reaches_the_server_root_for_any_writes_and_network_cuts(
    edge_url: str, steps: list[tuple[str, str, int]]
) -> None:
    asyncio.run(scenario(edge_url, steps))
