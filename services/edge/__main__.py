"""``python -m services.edge``: the client-facing edge (see ``--help``)."""

from __future__ import annotations

import asyncio
import logging
import sys

from libs.runtime import log_config, setup_logging, use_iomgr_engine
from services.edge.config import EdgeConfig, config_from_args


def main(argv: list[str] | None = None) -> int:
    use_iomgr_engine()  # before grpc is imported (libs/runtime/grpc_engine.py)
    config = config_from_args(argv)
    setup_logging(config.log_level, name=config.edge_id)
    log_config(logging.getLogger("services.edge"), config)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency, but optional in spirit
        pass
    asyncio.run(_run(config))
    return 0


async def _run(config: EdgeConfig) -> None:
    from services.edge.app import serve
    from services.edge.edge import Edge

    await serve(Edge(config))  # gRPC channels need the running loop


if __name__ == "__main__":
    sys.exit(main())
