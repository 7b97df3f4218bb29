"""Every algorithm against a real redis-server (Valkey 8.1 and Redis 6.2), time set by the test hook.

Each decision must equal the exact reference model, and the algorithm's invariant from
shared/design.md must hold over the whole schedule; a denied request must leave the state unchanged,
and a request repeated at now + retry_after must pass.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterator
from fractions import Fraction

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ratelimitd.config.models import max_requests_per_unit
from ratelimitd.config.units import Unit
from ratelimitd.store.checks import ENFORCED, CheckBatch, build_check, quota_boundaries
from ratelimitd.store.embedded import EmbeddedRedis
from tests.property import models
from tests.property.harness import T0, ScriptHarness, make_rule


@pytest.fixture
def harness(redis_server: EmbeddedRedis) -> Iterator[ScriptHarness]:
    h = ScriptHarness(redis_server.url)
    yield h
    h.close()


def schedules(window_us: int, max_cost: int) -> st.SearchStrategy[list[tuple[int, int]]]:
    gap = st.one_of(st.integers(0, window_us // 20), st.integers(0, window_us // 2), st.integers(0, 2 * window_us))
    return st.lists(st.tuples(gap, st.integers(0, max_cost)), min_size=1, max_size=60)


limits = st.integers(1, 12)
multipliers = st.integers(1, 3)
offsets = st.integers(0, 10**7)


def _run(harness: ScriptHarness, rule, model, schedule, offset):  # type: ignore[no-untyped-def]
    """Replay a schedule; return the admitted (time, cost) pairs."""
    harness.client.flushall()
    t = T0 + offset
    admitted: list[tuple[int, int]] = []
    for gap, cost in schedule:
        t += gap
        before = copy.deepcopy(model)
        result = harness.one(rule, ("v",), cost, t)
        expected = model.decide(t, cost)
        assert result.admitted == expected, (t, cost)
        if result.admitted:
            admitted.append((t, cost))
            assert result.retry_after_us == 0
        elif result.retry_after_us >= 0:
            probe = copy.deepcopy(before)
            assert probe.decide(t + result.retry_after_us, cost), "retry_after too early"
    return admitted


@given(n=limits, mult=multipliers, schedule_seed=st.data(), offset=offsets)
def test_fixed_window(harness: ScriptHarness, n: int, mult: int, schedule_seed: st.DataObject, offset: int) -> None:
    w = mult * 1_000_000
    rule = make_rule("fixed_window", n, Unit.SECOND, mult)
    schedule = schedule_seed.draw(schedules(w, n + 1))
    admitted = _run(harness, rule, models.FixedWindow(n, w), schedule, offset)
    per_window: dict[int, int] = defaultdict(int)
    for t, c in admitted:
        per_window[t // w] += c
    assert all(v <= n for v in per_window.values())


@given(n=limits, mult=multipliers, burst=st.integers(1, 20), schedule_seed=st.data(), offset=offsets)
def test_token_bucket(
    harness: ScriptHarness, n: int, mult: int, burst: int, schedule_seed: st.DataObject, offset: int
) -> None:
    w = mult * 1_000_000
    rule = make_rule("token_bucket", n, Unit.SECOND, mult, burst=burst)
    schedule = schedule_seed.draw(schedules(w, burst + 1))
    admitted = _run(harness, rule, models.TokenBucket(n, w, burst), schedule, offset)
    rate = Fraction(n, w)
    for i in range(len(admitted)):
        total = 0
        for j in range(i, len(admitted)):
            total += admitted[j][1]
            assert total <= burst + rate * (admitted[j][0] - admitted[i][0])


@given(n=limits, mult=multipliers, schedule_seed=st.data(), offset=offsets)
def test_sliding_window(harness: ScriptHarness, n: int, mult: int, schedule_seed: st.DataObject, offset: int) -> None:
    w = mult * 1_000_000
    rule = make_rule("sliding_window", n, Unit.SECOND, mult)
    schedule = schedule_seed.draw(schedules(w, n + 1))
    admitted = _run(harness, rule, models.SlidingWindow(n, w), schedule, offset)
    per_window: dict[int, int] = defaultdict(int)
    for t, c in admitted:
        per_window[t // w] += c
    assert all(v <= n for v in per_window.values())
    # The documented bound: any (t - W, t] holds at most N + x * P, x the elapsed fraction of t's window.
    for t, _ in admitted:
        k, e = divmod(t, w)
        in_window = sum(c for ts, c in admitted if t - w < ts <= t)
        assert in_window <= n + Fraction(e, w) * per_window.get(k - 1, 0)


@given(n=limits, mult=multipliers, schedule_seed=st.data(), offset=offsets)
def test_sliding_log(harness: ScriptHarness, n: int, mult: int, schedule_seed: st.DataObject, offset: int) -> None:
    w = mult * 1_000_000
    rule = make_rule("sliding_log", n, Unit.SECOND, mult)
    schedule = schedule_seed.draw(schedules(w, n + 1))
    admitted = _run(harness, rule, models.SlidingLog(n, w), schedule, offset)
    for t, _ in admitted:
        assert sum(c for ts, c in admitted if t - w < ts <= t) <= n


@given(
    n=limits,
    tz=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
    unit=st.sampled_from([Unit.DAY, Unit.WEEK, Unit.MONTH]),
    schedule=st.lists(st.tuples(st.integers(0, 40 * 3600 * 10**6), st.integers(0, 13)), min_size=1, max_size=40),
    offset=st.integers(0, 400 * 86400 * 10**6),
)
# a request at a local midnight that is not on a UTC hour (UTC+5:30)
@example(n=1, tz="Asia/Kolkata", unit=Unit.DAY, schedule=[(0, 0)], offset=1_441_000_000_000)
def test_quota(
    harness: ScriptHarness, n: int, tz: str, unit: Unit, schedule: list[tuple[int, int]], offset: int
) -> None:
    harness.client.flushall()
    rule = make_rule("quota", n, unit, timezone=tz)
    model = models.Quota(n)
    t = T0 + offset
    per_period: dict[int, int] = defaultdict(int)
    for gap, cost in schedule:
        t += gap
        start = quota_boundaries(unit, tz, t / 1e6)[1]
        result = harness.one(rule, ("v",), cost, t)
        assert result.admitted == model.decide(start, cost)
        if result.admitted:
            per_period[start] += cost
        assert result.reset_after_us == quota_boundaries(unit, tz, t / 1e6)[2] - t
    assert all(v <= n for v in per_period.values())


@pytest.mark.parametrize("algorithm", ["fixed_window", "token_bucket", "sliding_window", "sliding_log", "quota"])
def test_denied_request_writes_nothing(harness: ScriptHarness, algorithm: str) -> None:
    harness.client.flushall()
    rule = make_rule(algorithm, 3, Unit.DAY if algorithm == "quota" else Unit.MINUTE)
    t = T0
    assert harness.one(rule, ("v",), 3, t).admitted
    key = harness.key(rule, ("v",))
    dump = harness.client.dump(key)
    for i in range(5):
        assert not harness.one(rule, ("v",), 1 + i % 2, t + i).admitted
    assert harness.client.dump(key) == dump


@pytest.mark.parametrize("algorithm", ["fixed_window", "token_bucket", "sliding_window", "sliding_log", "quota"])
def test_peek_consumes_nothing_and_reports_exhaustion(harness: ScriptHarness, algorithm: str) -> None:
    harness.client.flushall()
    rule = make_rule(algorithm, 2, Unit.DAY if algorithm == "quota" else Unit.MINUTE)
    for _ in range(3):
        peek = harness.one(rule, ("v",), 0, T0)
        assert peek.admitted and peek.remaining == 2
    assert harness.client.exists(harness.key(rule, ("v",))) == 0
    assert harness.one(rule, ("v",), 2, T0).admitted
    assert not harness.one(rule, ("v",), 0, T0).admitted


@pytest.mark.parametrize("algorithm", ["fixed_window", "token_bucket", "sliding_window", "sliding_log", "quota"])
def test_every_key_expires(harness: ScriptHarness, algorithm: str) -> None:
    harness.client.flushall()
    rule = make_rule(algorithm, 5, Unit.DAY if algorithm == "quota" else Unit.MINUTE)
    harness.one(rule, ("v",), 1, int(harness.client.time()[0]) * 10**6)
    ttl = harness.client.pttl(harness.key(rule, ("v",)))
    limit_ms = (32 * 86400 if algorithm == "quota" else 2 * 60) * 1000
    assert 0 < ttl <= limit_ms


def test_fixed_window_keeps_its_expiry_when_only_the_count_is_written(harness: ScriptHarness) -> None:
    """Within a window the script writes only the count; the expiry comes from the window's first charge. A
    fresh key charged twice by one request, charged again in the window, then in the next window: it always
    expires by its window's end and counts what was admitted."""
    harness.client.flushall()
    rule = make_rule("fixed_window", 10, Unit.MINUTE)
    key = harness.key(rule, ("v",))
    minute = 60 * 10**6
    start = (int(harness.client.time()[0]) * 10**6 // minute + 1) * minute  # the next window's start
    check = build_check(rule, key, 1, ENFORCED)
    for now, batch, count in (
        (start + 1, CheckBatch((check, check)), b"2"),
        (start + 2, CheckBatch((check,)), b"3"),
        (start + minute, CheckBatch((check, check)), b"2"),
    ):
        assert harness.run([batch], now).results[0].admitted
        assert harness.client.hget(key, "c") == count
        assert 0 < harness.client.pttl(key) <= 2 * minute // 1000


def test_cost_above_capacity_never_fits(harness: ScriptHarness) -> None:
    harness.client.flushall()
    for algorithm in ("fixed_window", "token_bucket", "sliding_window", "sliding_log"):
        r = harness.one(make_rule(algorithm, 3, Unit.MINUTE), ("v",), 4, T0)
        assert not r.admitted and r.retry_after_us == -1, algorithm


@pytest.mark.parametrize(
    ("algorithm", "unit", "limit"),
    [
        ("fixed_window", Unit.YEAR, 4_000_000_000),
        ("quota", Unit.YEAR, 2**32 - 1),
        ("token_bucket", Unit.YEAR, max_requests_per_unit("token_bucket", 365 * 86400)),
        ("sliding_window", Unit.YEAR, max_requests_per_unit("sliding_window", 365 * 86400)),
    ],
)
def test_the_largest_accepted_limits_count_exactly(
    harness: ScriptHarness, algorithm: str, unit: Unit, limit: int
) -> None:
    """Every limit the config accepts is counted to the unit: all but one admitted, then exactly one more."""
    harness.client.flushall()
    rule = make_rule(algorithm, limit, unit)
    first = harness.one(rule, ("v",), limit - 1, T0)
    assert first.admitted and first.remaining == 1
    assert not harness.one(rule, ("v",), 2, T0 + 1).admitted
    last = harness.one(rule, ("v",), 1, T0 + 1)
    assert last.admitted and last.remaining == 0
