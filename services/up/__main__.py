"""``python -m services.up`` (``make up``): the whole system on this machine."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from libs.runtime import log_config, setup_logging
from services.up.config import config_from_args
from services.up.launcher import run


def main(argv: list[str] | None = None) -> int:
    config, ns = config_from_args(argv)
    setup_logging(config.log_level, name="up")
    log = logging.getLogger("services.up")
    log_config(log, config)
    if config.no_auth and not os.environ.get("TOPGUN_NO_AUTH"):
        log.warning("JWT_SECRET is not set: running in no-auth dev mode (TOPGUN_NO_AUTH)")
    if ns.seed_nodes and not ns.cluster_port:
        raise SystemExit("--seed-nodes needs --cluster-port (this member's route port)")
    return asyncio.run(run(config))


if __name__ == "__main__":
    sys.exit(main())
