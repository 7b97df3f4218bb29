"""Fixtures for the test folders that use the shared Redis (imported by their conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ratelimitd.store.embedded import EmbeddedRedis


@pytest.fixture(scope="module", autouse=True)
def clean_shared_redis(default_redis: EmbeddedRedis) -> Iterator[None]:
    """Each test module leaves the shared server as it found it: empty (tests also use unique keys)."""
    yield
    import redis

    with redis.Redis.from_url(default_redis.url) as client:
        client.flushall()
