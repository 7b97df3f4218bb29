"""The hot-path client against a real Redis: it tells when the store last answered (the coalescer's sign
that a late call is the worker's fault, not the store's)."""

from __future__ import annotations

import time

from ratelimitd.store.checks import Check, CheckBatch
from ratelimitd.store.connect import connect
from ratelimitd.store.embedded import EmbeddedRedis
from ratelimitd.store.fast_client import FastRedis


async def test_last_reply_moves_with_each_answer(default_redis: EmbeddedRedis) -> None:
    store = connect(default_redis.url, timeout=1.0)
    assert isinstance(store.hot, FastRedis)
    try:
        assert store.last_reply() == 0.0
        sent = time.perf_counter()
        check = Check("test:fast-client:last-reply", (1, 1, 0, 10, 60_000_000, 1, 0, 0))
        result = await store.evaluate([CheckBatch((check,))])
        assert result.results[0][0].admitted
        first = store.last_reply()
        assert first > sent
        await store.evaluate([CheckBatch((check,))])
        assert store.last_reply() > first
    finally:
        await store.close()
