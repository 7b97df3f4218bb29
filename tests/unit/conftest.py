"""Unit tests need no Redis: starting a server here is an error, so a unit test cannot come to depend on one."""

from __future__ import annotations

import pytest

from ratelimitd.store.embedded import EmbeddedRedis


@pytest.fixture(autouse=True)
def no_redis_server(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: EmbeddedRedis, timeout: float = 10.0) -> EmbeddedRedis:
        raise AssertionError("a unit test started a Redis server: such a test belongs in tests/integration")

    monkeypatch.setattr(EmbeddedRedis, "start", refuse)
