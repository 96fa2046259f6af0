"""Heap freezing keeps live objects out of the collector's walks and still collects garbage."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import Iterator

import pytest

from libs.runtime import freeze_heap, freeze_heap_forever


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    yield
    gc.unfreeze()


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector can free it


def test_freeze_heap_moves_live_objects_out_of_collections() -> None:
    gc.unfreeze()
    keep = [Node() for _ in range(100)]
    freeze_heap()
    assert gc.get_freeze_count() >= len(keep)


async def test_the_freezer_collects_young_cycles_before_freezing_and_thaws_on_schedule() -> None:
    gc.unfreeze()
    garbage = Node()
    ref = weakref.ref(garbage)
    del garbage
    task = asyncio.create_task(freeze_heap_forever(interval_s=0.01, thaw_every_s=0.05))
    try:
        for _ in range(500):  # a deadline, polled; the freezer runs every 10 ms
            if ref() is None and gc.get_freeze_count() > 0:
                break
            await asyncio.sleep(0.01)
        assert ref() is None, "a cycle that was garbage before the freeze was not collected"
        assert gc.get_freeze_count() > 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
