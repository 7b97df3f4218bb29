"""The engine with a fake store submit: which checks it sends, and how it turns the store's answer into a
decision. No Redis here; tests/integration/test_engine_store.py runs the engine against a real store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ratelimitd.config.holder import ConfigHolder
from ratelimitd.config.loader import load_config
from ratelimitd.engine.decision import Code
from ratelimitd.engine.engine import Engine, EngineOptions
from ratelimitd.engine.request import Descriptor, InvalidRequest, Request
from ratelimitd.store.checks import ENFORCED, QUOTA_MODE, SHADOW, CheckBatch
from ratelimitd.store.interface import CheckResult, RequestResult, StoreUnavailable
from ratelimitd.store.keys import KeyEncoder

CONFIG = """domain: d
descriptors:
  - key: hard
    rate_limit: {unit: minute, requests_per_unit: 5}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 5}
  - key: quota
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 5}
  - key: shadowquota
    quota_mode: true
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 5}
  - key: free
    rate_limit: {unlimited: true}
"""

Answer = Callable[[CheckBatch], RequestResult]


class FakeStore:
    """Records what the engine sends and answers with `answer` (by default: everything admitted)."""

    def __init__(self) -> None:
        self.sent: list[CheckBatch] = []
        self.answer: Answer = lambda batch: verdict(True, [(True, 4)] * len(batch.checks))
        self.down = False

    async def submit(self, batch: CheckBatch) -> tuple[int, int, RequestResult]:
        self.sent.append(batch)
        if self.down:
            raise StoreUnavailable("store timeout")
        return 1_000_000, 0, self.answer(batch)


def verdict(admitted: bool, checks: list[tuple[bool, int]]) -> RequestResult:
    return RequestResult(
        admitted, 0, 0, 0, [CheckResult(ok, left, 60_000_000, 0 if ok else 5_000_000) for ok, left in checks]
    )


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def engine(store: FakeStore, tmp_path: Path) -> Engine:
    (tmp_path / "d.yaml").write_text(CONFIG)
    holder = ConfigHolder(load_config(tmp_path))
    return Engine(holder, store.submit, KeyEncoder("t:"), EngineOptions())


def request(*entries: tuple[str, str], cost: int = 0) -> Request:
    return Request("d", tuple(Descriptor((e,)) for e in entries), hits_addend=cost)


async def test_each_rule_is_sent_with_its_mode_and_cost(engine: Engine, store: FakeStore) -> None:
    await engine.check(request(("hard", "a"), ("shadow", "a"), ("quota", "a"), ("shadowquota", "a"), cost=3))
    (batch,) = store.sent
    assert [(c.args.mode, c.args.cost, c.args.limit) for c in batch.checks] == [
        (ENFORCED, 3, 5),
        (SHADOW, 3, 5),
        (QUOTA_MODE, 3, 5),
        (SHADOW, 3, 5),  # shadow wins over quota_mode: it never denies
    ]
    assert len({c.key for c in batch.checks}) == 4


async def test_the_overall_code_is_the_store_verdict_not_recomputed(engine: Engine, store: FakeStore) -> None:
    """The script decides admission; the engine only reports it (a shadow rule over its limit stays OK)."""
    store.answer = lambda batch: verdict(True, [(False, 0)])
    d = await engine.check(request(("shadowquota", "a")))
    assert d.code is Code.OK and [s.code for s in d.statuses] == [Code.OK] and d.statuses[0].shadow_denied
    store.answer = lambda batch: verdict(False, [(False, 0), (True, 3)])
    d = await engine.check(request(("hard", "a"), ("quota", "a")))
    assert d.code is Code.OVER_LIMIT and [s.code for s in d.statuses] == [Code.OVER_LIMIT, Code.OK]
    assert d.retry_after_us == 5_000_000


async def test_a_denied_quota_descriptor_shows_over_limit_while_the_request_passes(
    engine: Engine, store: FakeStore
) -> None:
    store.answer = lambda batch: verdict(True, [(False, 0), (True, 2)])
    d = await engine.check(request(("quota", "a"), ("quota", "b")))
    assert d.code is Code.OK and [s.code for s in d.statuses] == [Code.OVER_LIMIT, Code.OK]
    assert d.closest_to_limit() is d.statuses[0]  # what rate-limit headers describe: the status closest to its limit


async def test_unlimited_and_unknown_never_reach_the_store(engine: Engine, store: FakeStore) -> None:
    d = await engine.check(request(("free", "x")))
    assert d.code is Code.OK and d.statuses[0].remaining == 2**32 - 1
    d = await engine.check(Request("nope", (Descriptor((("hard", "a"),)),)))
    assert d.code is Code.OK and d.statuses[0].rule is None
    assert store.sent == []


@pytest.mark.parametrize(("deny", "code"), [(False, Code.OK), (True, Code.OVER_LIMIT)])
async def test_a_store_failure_gives_the_failure_mode(tmp_path: Path, store: FakeStore, deny: bool, code: Code) -> None:
    (tmp_path / "d.yaml").write_text(CONFIG)
    engine = Engine(ConfigHolder(load_config(tmp_path)), store.submit, KeyEncoder("t:"), EngineOptions(deny))
    store.down = True
    d = await engine.check(request(("hard", "a")))
    assert d.store_failed and d.code is code and [s.code for s in d.statuses] == [code]
    name, labels = "ratelimit_service_should_rate_limit_error_total", {"err_type": "redis_error"}
    assert engine.metrics.registry.get_sample_value(name, labels) == 1


async def test_a_repeated_request_reuses_its_plan_until_the_config_changes(
    engine: Engine, store: FakeStore, tmp_path: Path
) -> None:
    for _ in range(3):
        await engine.check(request(("hard", "a")))
    assert len({id(b.checks[0]) for b in store.sent}) == 1  # the check built once, sent three times
    (tmp_path / "d.yaml").write_text(CONFIG.replace("requests_per_unit: 5}", "requests_per_unit: 7}", 1))
    engine.config.current = load_config(tmp_path)
    await engine.check(request(("hard", "a")))
    assert store.sent[-1].checks[0].args.limit == 7 and store.sent[-1].checks[0].key != store.sent[0].checks[0].key


async def test_invalid_requests_are_refused_before_the_store(engine: Engine, store: FakeStore) -> None:
    for _ in range(2):  # a refused request is not remembered as a plan
        with pytest.raises(InvalidRequest, match=r"descriptors\[0\] has no entries"):
            await engine.check(Request("d", (Descriptor(()),)))
    assert store.sent == []
