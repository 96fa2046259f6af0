"""The HTTP surface of an edge (thin): WebSocket upgrades at /ws and /, health, readiness,
HTTP sync and metrics. Everything behind the routes lives in the feature modules."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time

from aiohttp import web

from libs.runtime import announce_port
from services.edge.edge import Edge
from services.edge.http_sync import HttpSync
from services.edge.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from services.edge.session import Session

log = logging.getLogger(__name__)

EDGE_KEY = web.AppKey("edge", Edge)
BANNER = "TopGun edge: connect a WebSocket client to ws://<host>:<port>/ws\n"
READY_TIMEOUT_S = 60.0


async def websocket(request: web.Request) -> web.StreamResponse:
    edge = request.app[EDGE_KEY]
    ws = web.WebSocketResponse(
        max_msg_size=edge.config.max_frame_bytes * 4,  # up to 4x: answered with ERROR 413
        compress=False,
        autoping=True,
    )
    if not ws.can_prepare(request).ok:
        if request.path == "/":
            return web.Response(text=BANNER)
        return web.Response(status=400, text="expected a WebSocket upgrade\n")
    await edge.started.wait()
    await ws.prepare(request)
    session = Session(edge, ws, edge.next_conn_id(), request.remote or "")
    edge.add_session(session)
    try:
        await session.run()
    finally:
        edge.remove_session(session)
    return ws


async def health(request: web.Request) -> web.Response:
    edge = request.app[EDGE_KEY]
    state = edge.state if edge.state != "ready" or edge.ready else "starting"
    body = {
        "state": state,
        "connections": len(edge.sessions),
        "in_flight": _pending_writes(edge),
        "uptime_secs": int(time.monotonic() - edge.started_at),
        "edgeId": edge.edge_id,
    }
    return web.Response(text=json.dumps(body), content_type="application/json")


def _pending_writes(edge: Edge) -> int:
    writes = edge.features.get("writes")
    return int(writes.coalescer.pending_ops) if writes is not None else 0


async def live(request: web.Request) -> web.Response:
    return web.Response()


async def ready(request: web.Request) -> web.Response:
    edge = request.app[EDGE_KEY]
    if edge.ready:
        return web.Response(text="ready\n")
    return web.Response(status=503, text=f"{edge.state}\n")


async def cluster(request: web.Request) -> web.Response:
    from services.edge.cluster_view import cluster_status

    return web.json_response(cluster_status(request.app[EDGE_KEY]))


async def metrics(request: web.Request) -> web.Response:
    edge = request.app[EDGE_KEY]
    return web.Response(body=edge.metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE})


def build_app(edge: Edge) -> web.Application:
    app = web.Application(client_max_size=edge.config.max_frame_bytes)
    app[EDGE_KEY] = edge
    sync = HttpSync(edge)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/", websocket)
    app.router.add_get("/health", health)
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/healthz", ready)
    app.router.add_get("/ready", ready)
    app.router.add_post("/sync", sync.handle)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/cluster", cluster)
    return app


async def serve(edge: Edge) -> None:
    """Run the edge until SIGTERM/SIGINT: listen, wait until ready, print ``PORT=<n>``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = build_app(edge)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, edge.config.host, edge.config.port, reuse_address=True)
    await site.start()
    port = _bound_port(site)
    edge.bound_to(port)
    await edge.start()
    edge.mark_started()
    deadline = loop.time() + READY_TIMEOUT_S
    while not edge.ready and loop.time() < deadline and not stop.is_set():
        await asyncio.sleep(0.02)
    if not edge.ready:
        log.warning("storage feeds not live after %.0fs; serving anyway", READY_TIMEOUT_S)
    log.info("edge %s listening on %s:%d", edge.edge_id, edge.config.host, port)
    announce_port(port)
    try:
        await stop.wait()
    finally:
        log.info("edge %s shutting down", edge.edge_id)
        await edge.stop()
        await runner.cleanup()


def _bound_port(site: web.TCPSite) -> int:
    server = site._server
    assert server is not None
    sockets = getattr(server, "sockets", None) or []
    return int(sockets[0].getsockname()[1])
