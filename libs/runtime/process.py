"""Process conventions: logs on stderr, and one ``PORT=<n>`` line on stdout once ready.

Tools that spawn a server read its stdout only up to the ``PORT=`` line and then stop reading,
so nothing else may go to stdout after it (a full pipe would block the server).
"""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "INFO", name: str = "") -> None:
    prefix = f"{name} " if name else ""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s",
    )


def announce_port(port: int) -> None:
    """Print the ready line the TopGun process contract asks for, and flush it."""
    sys.stdout.write(f"PORT={port}\n")
    sys.stdout.flush()
