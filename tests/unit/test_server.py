"""Start-up helpers of the service process."""

from __future__ import annotations

import gc

from ratelimitd.server import freeze_startup_heap


def test_the_startup_heap_is_frozen_out_of_full_collections() -> None:
    before = gc.get_freeze_count()
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > before
        marker: list[int] = []  # a container, so the collector tracks it
        assert any(o is marker for o in gc.get_objects(generation=0))  # new objects are still collected
    finally:
        gc.unfreeze()
