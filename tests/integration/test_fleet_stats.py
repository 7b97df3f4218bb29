"""The console's fleet statistics in a real Redis: buckets per rule, top denied values, bounded memory."""

from __future__ import annotations

import uuid

import pytest

from ratelimitd.store.connect import connect
from ratelimitd.store.embedded import EmbeddedRedis
from ratelimitd.store.fleet_stats import BUCKET, KEEP_TOP, FleetStatsStore


@pytest.fixture
async def stats(default_redis: EmbeddedRedis):  # type: ignore[no-untyped-def]
    store = connect(default_redis.url)
    yield FleetStatsStore(store, f"t{uuid.uuid4().hex[:8]}:")
    await store.close()


async def test_counts_from_several_workers_add_up_per_rule_and_bucket(stats: FleetStatsStore) -> None:
    now = 1_000_000.0
    await stats.add(now, {("d", "user"): [5, 2, 1, 0]}, {})
    await stats.add(now + 1, {("d", "user"): [1, 1, 0, 3], ("d", "ip"): [7, 0, 0, 0]}, {})
    await stats.add(now + BUCKET, {("d", "user"): [2, 0, 0, 0]}, {})
    series = await stats.series(now + BUCKET)
    assert series[("d", "user")] == [
        [now // BUCKET * BUCKET, 6, 3, 1, 3],
        [now // BUCKET * BUCKET + BUCKET, 2, 0, 0, 0],
    ]
    assert series[("d", "ip")] == [[now // BUCKET * BUCKET, 7, 0, 0, 0]]
    assert await stats.series(now + 2000) == {}  # older than 15 minutes: not shown


async def test_top_denied_values_are_ranked_over_minutes_and_bounded(stats: FleetStatsStore) -> None:
    now = 2_000_000.0
    await stats.add(now, {}, {("d", "user"): {"mallory": 50, "eve": 7}})
    await stats.add(now + 60, {}, {("d", "user"): {"eve": 60, "bob": 1}})
    top = await stats.top(now + 60, n=2)
    assert top == {("d", "user"): [("eve", 67), ("mallory", 50)]}
    await stats.add(now, {}, {("d", "many"): {f"v{i}": i + 1 for i in range(KEEP_TOP + 50)}})
    kept = (await stats.top(now, n=10_000))[("d", "many")]
    assert len(kept) == KEEP_TOP and kept[0] == (f"v{KEEP_TOP + 49}", KEEP_TOP + 50)
