"""A WebSocket proxy between an SDK client and the real edge that can cut the network and slip
garbage frames into the server's stream; and the test that the client survives the garbage.

The proxy forwards real frames both ways, so everything the client sees besides the injected
garbage comes from the real launcher.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import msgpack
import pytest
from aiohttp import WSMsgType, web

import topgun
from tests.support.processes import start_service
from tests.unit.test_client_fake_edge import wait_until

LAUNCHER_ENV = {"TOPGUN_NO_AUTH": "1", "STORAGE_BACKEND": "null"}
FAST = topgun.ClientOptions(
    connection=topgun.ConnectionOptions(
        backoff_base=0.05, backoff_max=0.2, device_grace=0.1, ping_interval=1.0
    ),
    sync_stall_timeout=10.0,
)


def launcher_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/ws"


@pytest.fixture(scope="module")
def edge_url() -> Iterator[str]:
    svc = start_service("services.up", ["--port", "0"], env=LAUNCHER_ENV, ready_timeout=90)
    try:
        yield launcher_url(svc.port)
    finally:
        svc.stop()


class WsProxy:
    """``async with WsProxy(upstream) as p:`` forwards ``p.url`` to ``upstream``."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.garbage: list[bytes] = []
        self.garbage_every = 0  # inject one garbage frame before every Nth server frame
        self.injected = 0
        self.refusing = False
        self.stalled = False  # the link is dead: frames in both directions are lost
        self.port = 0
        self._pairs: set[tuple[web.WebSocketResponse, aiohttp.ClientWebSocketResponse]] = set()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def __aenter__(self) -> WsProxy:
        self._http = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_get("/ws", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server: Any = site._server
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cut()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def cut(self) -> None:
        """Drop every connection and refuse new ones until :meth:`restore`."""
        self.refusing = True
        for down, up in list(self._pairs):
            with contextlib.suppress(Exception):
                await down.close()
            with contextlib.suppress(Exception):
                await up.close()

    def stall(self) -> None:
        """Lose every frame from now on, without closing anything: a link that died silently
        (what was in flight is gone; TCP delivers nothing after it either)."""
        self.stalled = True

    async def restore(self) -> None:
        """Accept connections again; a stalled link is closed so that the client notices."""
        if self.stalled:
            self.stalled = False
            await self.cut()
        self.refusing = False

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.refusing:
            return web.Response(status=503, text="network cut")
        assert self._http is not None
        try:
            up = await self._http.ws_connect(self.upstream, max_msg_size=64 * 1024 * 1024)
        except aiohttp.ClientError:
            return web.Response(status=502, text="upstream unreachable")
        down = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024)
        await down.prepare(request)
        pair = (down, up)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._pump_up(down, up), self._pump_down(up, down))
        finally:
            self._pairs.discard(pair)
            await up.close()
            await down.close()
        return down

    async def _pump_up(self, down: web.WebSocketResponse, up: Any) -> None:
        async for frame in down:
            if self.stalled:
                continue
            if frame.type is WSMsgType.BINARY and not up.closed:
                await up.send_bytes(frame.data)
            elif frame.type is not WSMsgType.TEXT:
                break
        await up.close()

    async def _pump_down(self, up: Any, down: web.WebSocketResponse) -> None:
        n = 0
        async for frame in up:
            if frame.type is not WSMsgType.BINARY or down.closed:
                break
            if self.stalled:
                continue
            n += 1
            if self.garbage and self.garbage_every and n % self.garbage_every == 0:
                await down.send_bytes(self.garbage[self.injected % len(self.garbage)])
                self.injected += 1
            await down.send_bytes(frame.data)
        await down.close()


@contextlib.asynccontextmanager
async def sdk(url: str, **kw: Any) -> AsyncIterator[topgun.TopGunClient]:
    kw.setdefault("options", FAST)
    async with topgun.TopGunClient(url, **kw) as c:
        yield c


def _pack(msg: Any) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)


GARBAGE = [
    b"\xc1",
    b"",
    _pack([1, 2, 3]),
    _pack({"type": "NOT_A_TYPE", "payload": {}}),
    _pack({"type": "OP_ACK", "payload": {"lastId": ["x"]}}),
    _pack({"type": "SERVER_EVENT", "payload": {"mapName": "m", "eventType": "PUT"}}),
    _pack({"type": "SYNC_RESP_BUCKETS", "payload": {"mapName": "x", "path": "", "buckets": 7}}),
    _pack({"type": "BATCH", "count": 3, "data": b"\xff\xff\xff\xff"}),
    b"\x91" * 2000 + b"\xc0",
    _pack({"type": "QUERY_RESP", "payload": {"queryId": 5, "results": "no"}}),
]


async def test_garbage_frames_from_the_server_side_do_not_break_the_client(
    edge_url: str,
) -> None:
    async with WsProxy(edge_url) as proxy:
        proxy.garbage = GARBAGE
        proxy.garbage_every = 2
        async with sdk(proxy.url) as victim, sdk(edge_url) as other:
            mv, mo = victim.lww_map("garbage"), other.lww_map("garbage")
            q = victim.query("garbage", where={"kind": "x"})
            await victim.wait_ready(15)
            await other.wait_ready(15)
            for i in range(30):
                mv.set(f"v{i}", {"kind": "x", "i": i})
                mo.set(f"o{i}", {"kind": "x", "i": i})
            await victim.flush(15)
            await other.flush(15)
            await wait_until(lambda: mv.root_hash == mo.root_hash and len(mv) == 60, 15)
            await wait_until(lambda: len(q.result) == 60, 15)
            assert proxy.injected >= len(GARBAGE)
            assert victim.conn.bad_frames >= len(GARBAGE)
            assert victim.conn.sessions == 1  # the socket was never given up
            assert victim.status is topgun.Status.READY
            q.close()
