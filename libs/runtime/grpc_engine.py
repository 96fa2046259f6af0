"""Which I/O engine gRPC's core uses in a service process.

Since grpcio 1.6x the core does its socket I/O on its EventEngine threads: every message a
grpc.aio call sends or receives is handed from a poller thread to a worker thread, then to the
thread that drains the completion queue, then to the event loop. On a small machine those
hand-offs, not the bytes, are what a message costs. The older iomgr engine with the ``epoll1``
poller reads and writes the sockets on the thread that drains the completion queue, one hand-off
fewer per message: a lock-step round trip on one stream between two processes takes about a
third less CPU on each side and ~70 µs less time (an echo over one stream, grpcio 1.85, two
cores).

The settings are read once, when the ``grpc`` package is first imported, so
``use_iomgr_engine`` must run before that import (first thing in a service's ``main``, with the
modules that import ``grpc`` imported after it). Settings already present in the environment
are left alone; ``TOPGUN_GRPC_ENGINE=event_engine`` keeps gRPC's own default.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

# the EventEngine experiments that move I/O off the completion-queue thread
IOMGR_EXPERIMENTS = ",".join(
    f"-{name}"
    for name in (
        "event_engine_client",
        "event_engine_listener",
        "event_engine_for_all_other_endpoints",
        "event_engine_callback_cq",
    )
)


def use_iomgr_engine(environ: MutableMapping[str, str] | None = None) -> bool:
    """Select iomgr + epoll1 for this process unless the environment already chose; returns
    whether the settings were applied (False too when ``grpc`` was imported already)."""
    env = os.environ if environ is None else environ
    if env.get("TOPGUN_GRPC_ENGINE", "iomgr") != "iomgr" or not sys.platform.startswith("linux"):
        return False
    if "grpc" in sys.modules or "GRPC_EXPERIMENTS" in env or "GRPC_POLL_STRATEGY" in env:
        return False
    env["GRPC_EXPERIMENTS"] = IOMGR_EXPERIMENTS
    env["GRPC_POLL_STRATEGY"] = "epoll1"
    return True
