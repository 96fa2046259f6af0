"""Keep Python's cyclic garbage collector off a large, long-lived heap.

A storage node holds millions of small record objects that never form cycles. CPython 3.11 runs a
full collection whenever the objects that survived into the oldest generation grew by a quarter,
and each full collection walks every tracked object: with a million records that is a pause of
about a second and, amortised, several microseconds per written record.

``freeze_heap_forever`` moves the survivors into the permanent generation (``gc.freeze``) every
``interval_s``, so a full collection walks only what was created since. Young garbage is still
collected as before (generations 0 and 1 are untouched); only cycles that were alive at a freeze
and became garbage later wait for the next thaw: every ``thaw_every_s`` the heap is unfrozen and
collected once in full, which bounds that memory.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger(__name__)

FREEZE_INTERVAL_S = 5.0
THAW_EVERY_S = 600.0


def freeze_heap() -> None:
    """Collect once, then exclude every surviving object from later collections."""
    gc.collect()
    gc.freeze()


async def freeze_heap_forever(
    interval_s: float = FREEZE_INTERVAL_S, thaw_every_s: float = THAW_EVERY_S
) -> None:
    """Freeze the heap every ``interval_s``; thaw and collect it in full every ``thaw_every_s``.
    Runs until cancelled."""
    last_thaw = time.monotonic()
    while True:
        await asyncio.sleep(interval_s)
        if time.monotonic() - last_thaw >= thaw_every_s:
            last_thaw = time.monotonic()
            gc.unfreeze()
            t0 = time.perf_counter()
            found = gc.collect()
            log.debug(
                "full collection: %d unreachable objects in %.3fs", found, time.perf_counter() - t0
            )
        else:
            gc.collect(1)  # young garbage is collected, not frozen
        gc.freeze()
