"""Configuration precedence for every service: CLI flag, then ``TOPGUN_*`` variable, then default.

A service declares its flags with ``default=env_default("TOPGUN_X", fallback)``, so argparse
yields the environment value when the flag is absent, and builds its frozen config dataclass
from the parsed namespace. The environment is read here, at start-up, and nowhere deeper.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T", str, int, float, bool)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_default(name: str, fallback: T, environ: Mapping[str, str] | None = None) -> T:
    """The value of environment variable ``name`` converted to ``fallback``'s type, else ``fallback``."""
    env = os.environ if environ is None else environ
    raw = env.get(name)
    if raw is None:
        return fallback
    if isinstance(fallback, bool):
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise SystemExit(f"{name}={raw!r}: expected one of 1/0, true/false, yes/no, on/off")
    try:
        return type(fallback)(raw)
    except ValueError:
        raise SystemExit(
            f"{name}={raw!r}: expected a {type(fallback).__name__}, e.g. {fallback!r}"
        ) from None


def log_config(logger: logging.Logger, config: Any) -> None:
    """Log a config dataclass at start-up, hiding secrets."""
    parts = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if any(s in f.name.lower() for s in ("secret", "password", "token")) and value:
            value = "***"
        elif "dsn" in f.name.lower() and value and "@" in str(value):
            value = "***@" + str(value).rsplit("@", 1)[1]
        parts.append(f"{f.name}={value}")
    logger.info("config: %s", " ".join(parts))


def parse_node_list(
    text: str, flag: str = "--storage-nodes", *, allow_bare: bool = False
) -> tuple[tuple[str, str], ...]:
    """``id1=host:port,id2=host:port`` -> ``(("id1", "host:port"), ...)``, order kept.

    With ``allow_bare`` an entry may be just ``host:port``; it is named ``node-<position>``.
    A malformed entry stops the program with a message naming the flag and the entry.
    """
    out: list[tuple[str, str]] = []
    for i, part in enumerate(p.strip() for p in text.split(",")):
        if not part:
            continue
        node, sep, address = part.rpartition("=")
        if not sep and allow_bare:
            node, address = f"node-{i + 1}", part
        if not node.strip() or ":" not in address:
            expected = "id=host:port or host:port" if allow_bare else "id=host:port"
            raise SystemExit(f"{flag}: expected {expected}, got {part!r}")
        out.append((node.strip(), address.strip()))
    return tuple(out)
