"""How TopGun orders node ids when two timestamps tie on millis and counter.

The TypeScript core breaks the tie with ``a.nodeId.localeCompare(b.nodeId)``: ICU collation, not
code-point order (CRDT.md section 4). Both orders agree for ids made only of ``[0-9a-z-]`` (UUIDs,
``node-1``), which is what clients generate, so those take a plain string comparison. Any other
id goes through the Unicode Collation Algorithm (``pyuca``, the default table ICU's root and
en-US collations are built on), so mixed case (``"a" < "B"``, ``"node" < "Node"``), ``_`` against
``-`` and accented letters rank as a TypeScript client ranks them, and every replica picks the
same LWW winner.
"""

from __future__ import annotations

import re
from functools import lru_cache

import pyuca

_SIMPLE = re.compile(r"[0-9a-z\-]*\Z")
_collator = pyuca.Collator()


@lru_cache(maxsize=8192)
def _sort_key(node_id: str) -> tuple[int, ...]:
    # Code points break ties the collation leaves (ids differing only in ignorable characters),
    # so two distinct ids never compare equal.
    return (*_collator.sort_key(node_id), 0, *map(ord, node_id))


def compare_node_ids(a: str, b: str) -> int:
    """-1, 0 or 1 as node id ``a`` ranks before, equal to or after ``b`` (``localeCompare`` sign)."""
    if a == b:
        return 0
    if _SIMPLE.match(a) and _SIMPLE.match(b):
        return -1 if a < b else 1
    ka, kb = _sort_key(a), _sort_key(b)
    return -1 if ka < kb else 1


def node_id_after(a: str, b: str) -> bool:
    """True when ``a`` ranks strictly after ``b``: the node-id tie-break of an LWW merge."""
    return a != b and compare_node_ids(a, b) > 0
