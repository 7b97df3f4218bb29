"""Several `ratelimitd serve` processes share one store (standalone Redis, then a 6-node cluster).

Hypothesis draws a limit, a few keys and a schedule of requests (key, cost, instance, pause); they are
fired concurrently from threads. Every decision carries the store's time and its place in its store
call (`--expose-store-time`), which orders the decisions exactly as Redis made them. Replaying that
order through the exact reference model must give the same answer for every request — so no
over-admission and no spurious denial — and each algorithm's invariant is checked directly on the
admitted hits. One of the four instances runs with its clock an hour ahead: only the store's counts.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import grpc
import pytest
import redis
from envoy.service.ratelimit.v3 import rls_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from ratelimitd.config.loader import load_config
from ratelimitd.config.matcher import match
from ratelimitd.store.checks import quota_boundaries
from ratelimitd.store.embedded import EmbeddedRedis
from ratelimitd.store.keys import KeyEncoder
from tests.conftest import DEEP
from tests.property import models
from tests.service import RLS, ServiceProcess, descriptor
from tests.topology import LocalCluster

pytestmark = pytest.mark.slow

INSTANCES = 4
GRID = {
    "fixed_window": [(n, m, 0) for n in (1, 3, 5) for m in (1, 2)],
    "sliding_log": [(n, m, 0) for n in (1, 3, 5) for m in (1, 2)],
    "sliding_window": [(n, m, 0) for n in (2, 4, 6) for m in (1, 2)],
    "token_bucket": [(n, m, b) for n in (2, 5) for m in (1, 2) for b in (1, 3, 6)],
    "quota": [(n, 1, 0) for n in (2, 5, 9)],
}


def _config() -> str:
    lines = ["domain: dist", "descriptors:"]
    for alg, grid in GRID.items():
        for n, m, b in grid:
            unit = "day" if alg == "quota" else "second"
            extra = f", burst: {b}" if b else ""
            mult = "" if alg == "quota" else f", unit_multiplier: {m}"
            lines += [
                "  - key: alg",
                f"    value: '{alg}:{n}:{m}:{b}'",
                "    descriptors:",
                "      - key: k",
                f"        rate_limit: {{unit: {unit}, requests_per_unit: {n}, algorithm: {alg}{mult}{extra}}}",
            ]
    return "\n".join(lines) + "\n"


@dataclass
class Fleet:
    services: list[ServiceProcess]
    client: redis.Redis | redis.RedisCluster
    config: Path


@pytest.fixture(scope="module", params=["standalone", "cluster"])
def fleet(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    path = tmp_path_factory.mktemp("dist") / "dist.yaml"
    path.write_text(_config())
    if request.param == "standalone":
        store: EmbeddedRedis | LocalCluster = EmbeddedRedis().start()
        url = store.url
        client: redis.Redis | redis.RedisCluster = redis.Redis.from_url(url)
    else:
        store = LocalCluster().start()
        url = store.url
        client = store.client()
    services = []
    try:
        for i in range(INSTANCES):
            env = {"RATELIMITD_TEST_CLOCK_OFFSET": "3600"} if i == INSTANCES - 1 else {}
            services.append(
                ServiceProcess(
                    path, url, "--expose-store-time", "--store-timeout", "2", "--local-cache-size", "0", env=env
                ).start()
            )
        yield Fleet(services, client, path)
    finally:
        codes = [s.stop() for s in services]
        store.close()
        assert codes == [0] * len(services)


@dataclass(frozen=True)
class Decided:
    order: tuple[int, int]
    key: str
    cost: int
    admitted: bool


def fire(fleet: Fleet, value: str, schedule: list[tuple[int, int, int, float]], keys: list[str]) -> list[Decided]:
    start = time.monotonic() + 0.05
    offsets = []
    at = 0.0
    for *_, pause in schedule:
        at += pause
        offsets.append(at)

    def one(i: int) -> Decided:
        key_i, cost, instance, _ = schedule[i]
        time.sleep(max(0.0, start + offsets[i] - time.monotonic()))
        svc = fleet.services[instance]
        req = rls_pb2.RateLimitRequest(domain="dist")
        req.descriptors.append(descriptor([("alg", value), ("k", keys[key_i])], hits=cost))
        resp, call = svc.stub().ShouldRateLimit.with_call(req, timeout=10)
        meta = dict(call.trailing_metadata())
        now_us, seq = (int(x) for x in meta["ratelimitd-store-order"].split(":"))
        return Decided((now_us, seq), keys[key_i], cost, resp.statuses[0].code == RLS.OK)

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(len(schedule))))


def model_for(alg: str, n: int, m: int, b: int):  # type: ignore[no-untyped-def]
    w = m * 1_000_000
    return {
        "fixed_window": lambda: models.FixedWindow(n, w),
        "sliding_log": lambda: models.SlidingLog(n, w),
        "sliding_window": lambda: models.SlidingWindow(n, w),
        "token_bucket": lambda: models.TokenBucket(n, w, b),
        "quota": lambda: models.Quota(n),
    }[alg]()


def check_invariant(alg: str, n: int, m: int, b: int, admitted: list[tuple[int, int]]) -> None:
    w = m * 1_000_000
    if alg in ("fixed_window", "sliding_window", "quota"):
        size = 86400 * 1_000_000 if alg == "quota" else w
        per: dict[int, int] = defaultdict(int)
        for t, c in admitted:
            per[t // size] += c
        assert all(v <= n for v in per.values()), per
    if alg == "sliding_log":
        for t, _ in admitted:
            assert sum(c for ts, c in admitted if t - w < ts <= t) <= n
    if alg == "token_bucket":
        for i in range(len(admitted)):
            total = 0
            for j in range(i, len(admitted)):
                total += admitted[j][1]
                assert total <= b + Fraction(n, w) * (admitted[j][0] - admitted[i][0])


def schedules(n_max: int) -> st.SearchStrategy[list[tuple[int, int, int, float]]]:
    pause = st.one_of(st.just(0.0), st.just(0.0), st.floats(0, 0.03), st.floats(0, 0.6))
    item = st.tuples(st.integers(0, 2), st.integers(0, n_max + 1), st.integers(0, INSTANCES - 1), pause)
    return st.lists(item, min_size=1, max_size=24)


@pytest.mark.parametrize("alg", list(GRID))
def test_instances_together_never_exceed_the_limit(fleet: Fleet, alg: str) -> None:
    @settings(max_examples=400 if DEEP else 8)
    @given(params=st.sampled_from(GRID[alg]), data=st.data())
    def run(params: tuple[int, int, int], data: st.DataObject) -> None:
        n, m, b = params
        schedule = data.draw(schedules(max(n, b)))
        value = f"{alg}:{n}:{m}:{b}"
        keys = [f"{uuid.uuid4().hex}{suffix}" for suffix in ("", "|x", "{}")]
        decided = fire(fleet, value, schedule, keys)
        # a closing peek per key through the clock-shifted instance: denials must have consumed nothing
        for key in keys:
            resp, call = (
                fleet.services[-1]
                .stub()
                .ShouldRateLimit.with_call(
                    rls_pb2.RateLimitRequest(
                        domain="dist", descriptors=[descriptor([("alg", value), ("k", key)], hits=0)]
                    ),
                    timeout=10,
                )
            )
            now_us, seq = (int(x) for x in dict(call.trailing_metadata())["ratelimitd-store-order"].split(":"))
            decided.append(Decided((now_us, seq), key, 0, resp.statuses[0].code == RLS.OK))
        per_key: dict[str, list[Decided]] = defaultdict(list)
        for d in sorted(decided, key=lambda d: d.order):
            per_key[d.key].append(d)
        for key, history in per_key.items():
            model = model_for(alg, n, m, b)
            admitted = []
            for d in history:
                t = d.order[0]
                arg = quota_boundaries(load_rule(fleet, value).unit, "UTC", t / 1e6)[1] if alg == "quota" else t
                assert d.admitted == model.decide(arg, d.cost), (key, d, history)
                if d.admitted and d.cost:
                    admitted.append((t, d.cost))
            check_invariant(alg, n, m, b, admitted)
        if alg == "fixed_window":  # total consumed in Redis equals total admitted, per key and window
            rule = load_rule(fleet, value)
            enc = KeyEncoder()
            w = m * 1_000_000
            for key, history in per_key.items():
                state = fleet.client.hgetall(enc.key(enc.rule_part("dist", rule.ident), (value, key)))
                read_at = int(fleet.client.time()[0]) * 1_000_000 if not state else 0
                admitted_windows = [d.order[0] // w for d in history if d.admitted and d.cost]
                if state:
                    window = int(state[b"w"])
                    expected = sum(d.cost for d in history if d.admitted and d.order[0] // w == window)
                    assert int(state[b"c"]) == expected
                elif admitted_windows:  # gone only because its window ended (TTL = window end)
                    assert (max(admitted_windows) + 1) * w <= read_at + 1_000_000

    run()


_RULES: dict[str, object] = {}


def load_rule(fleet: Fleet, value: str):  # type: ignore[no-untyped-def]
    if value not in _RULES:
        domain = load_config(fleet.config).domains["dist"]
        found = match(domain.tree, (("alg", value), ("k", "x")))
        assert found is not None
        _RULES[value] = found.rule
    return _RULES[value]


def test_stub_channel_errors_are_not_swallowed(fleet: Fleet) -> None:
    """The harness itself fails loudly on a bad request, so an empty schedule cannot pass silently."""
    with pytest.raises(grpc.RpcError):
        fleet.services[0].stub().ShouldRateLimit(rls_pb2.RateLimitRequest(domain=""), timeout=5)
