"""The engine's remembered plans (requests matched against the config) against a real store, in-process: a
repeated request keeps counting, a swapped config takes effect on the next request, invalid requests stay
refused, and a quota's period boundaries follow the clock."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ratelimitd.config.holder import ConfigHolder
from ratelimitd.config.loader import Config, load_config
from ratelimitd.engine.decision import Code
from ratelimitd.engine.engine import Engine, EngineOptions
from ratelimitd.engine.request import Descriptor, InvalidRequest, Request
from ratelimitd.scheduler.coalescer import Coalescer
from ratelimitd.store import checks
from ratelimitd.store.checks import CheckBatch
from ratelimitd.store.connect import connect
from ratelimitd.store.embedded import EmbeddedRedis
from ratelimitd.store.interface import RequestResult
from ratelimitd.store.keys import KeyEncoder


def config(tmp_path: Path, limit: int, algorithm: str = "fixed_window", unit: str = "hour") -> Config:
    f = tmp_path / f"plans-{limit}-{algorithm}.yaml"
    f.write_text(
        "domain: plans\ndescriptors:\n"
        f"  - key: k\n    rate_limit: {{unit: {unit}, requests_per_unit: {limit}, algorithm: {algorithm}}}\n"
        "  - key: free\n    rate_limit: {unlimited: true}\n"
    )
    return load_config(f)


@pytest.fixture
async def engine(default_redis: EmbeddedRedis, tmp_path: Path) -> AsyncIterator[Engine]:
    store = connect(default_redis.url, timeout=1.0)
    holder = ConfigHolder(config(tmp_path, 3))
    yield Engine(holder, Coalescer(store.evaluate, timeout=1.0).submit, KeyEncoder("plans:"), EngineOptions())
    await store.close()


def req(value: str) -> Request:
    return Request("plans", (Descriptor((("k", value),)), Descriptor((("free", "x"),))))


async def test_a_repeated_request_keeps_counting_until_its_limit(engine: Engine) -> None:
    decisions = [await engine.check(req("repeat")) for _ in range(4)]
    assert [d.code for d in decisions] == [Code.OK, Code.OK, Code.OK, Code.OVER_LIMIT]
    assert [d.statuses[0].remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[0].statuses[1].remaining == 2**32 - 1  # unlimited, never sent to the store


async def test_a_swapped_config_applies_to_the_next_request(engine: Engine, tmp_path: Path) -> None:
    assert (await engine.check(req("swap"))).statuses[0].remaining == 2
    engine.config.current = config(tmp_path, 10)
    after = await engine.check(req("swap"))
    assert after.statuses[0].rule is not None and after.statuses[0].rule.requests_per_unit == 10
    assert after.statuses[0].remaining == 9  # a changed limit is a new counter


async def test_quota_checks_are_built_per_request(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A remembered plan must not freeze a quota's period boundaries: they follow the service clock."""
    engine.config.current = config(tmp_path, 2, "quota", "day")
    sent: list[CheckBatch] = []
    forward = engine.submit

    async def recording(batch: CheckBatch) -> tuple[int, int, RequestResult]:
        sent.append(batch)
        return await forward(batch)

    engine.submit = recording
    assert (await engine.check(req("quota"))).code is Code.OK
    monkeypatch.setattr(checks, "wall_time", lambda: time.time() + 86_400)  # a day later by this clock
    assert (await engine.check(req("quota"))).code is Code.OK  # Redis time still picks today's period
    assert (await engine.check(req("quota"))).code is Code.OVER_LIMIT
    first, later = sent[0].checks[0].args, sent[1].checks[0].args
    assert (later.p1, later.p2, later.p3) == (first.p2, first.p3, first.p4)  # the boundaries moved on a period


async def test_invalid_requests_are_refused_every_time(engine: Engine) -> None:
    bad = Request("plans", (Descriptor(()),))
    for _ in range(2):
        with pytest.raises(InvalidRequest, match=r"descriptors\[0\] has no entries"):
            await engine.check(bad)
