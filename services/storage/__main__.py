"""``python -m services.storage``: flags -> config -> serve."""

from __future__ import annotations

import asyncio
import sys

from libs.runtime import setup_logging, use_iomgr_engine


def main(argv: list[str] | None = None) -> int:
    use_iomgr_engine()  # before grpc is imported (libs/runtime/grpc_engine.py)
    from services.storage.config import load_config
    from services.storage.server import serve

    config = load_config(argv)
    setup_logging(config.log_level, name=config.node_id)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
