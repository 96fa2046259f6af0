"""NATS subjects of the cluster's fan-out (core NATS, not JetStream: live traffic, no history).

- ``<prefix>.chg.<map token>``: the changes a storage node applied as primary, one
  ``ChangeBatch`` per map per batch; every edge subscribes to ``<prefix>.chg.*`` and skips maps
  nobody watches by the subject alone, before decoding anything.
- ``<prefix>.bc``: ``Broadcast`` items — topic messages published by edges, counter updates by
  the counter's owner — delivered to every edge.

A map name becomes one subject token with URL-safe base64 (letters, digits, ``-`` and ``_``), so
any name is a valid subject and the mapping is reversible.
"""

from __future__ import annotations

import base64

MAX_PAYLOAD = 900_000  # NATS refuses messages over the server's max_payload (1 MB default)


def map_token(map_name: str) -> str:
    return base64.urlsafe_b64encode(map_name.encode()).rstrip(b"=").decode() or "_"


def map_of_token(token: str) -> str:
    if token == "_":
        return ""
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()


def changes_subject(prefix: str, map_name: str) -> str:
    return f"{prefix}.chg.{map_token(map_name)}"


def changes_wildcard(prefix: str) -> str:
    return f"{prefix}.chg.*"


def broadcast_subject(prefix: str) -> str:
    return f"{prefix}.bc"
