"""The local over-limit cache answers known-exhausted keys without a store call, and only until they
could pass again."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import redis

from ratelimitd.store.embedded import EmbeddedRedis
from tests.integration.test_operations import metric, metrics_text
from tests.service import RLS, ServiceProcess

CONFIG = """domain: lc
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 2}
  - key: tb
    rate_limit: {unit: second, requests_per_unit: 1, algorithm: token_bucket}
"""


def script_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k.startswith(("cmdstat_evalsha", "cmdstat_eval")))


def test_exhausted_key_is_denied_without_the_store(tmp_path: Path, default_redis: EmbeddedRedis) -> None:
    (tmp_path / "lc.yaml").write_text(CONFIG)
    svc = ServiceProcess(tmp_path, default_redis.url).start()
    client = redis.Redis.from_url(default_redis.url)
    try:
        user = uuid.uuid4().hex
        assert [svc.check("lc", [("user", user)]).overall_code for _ in range(3)] == [RLS.OK, RLS.OK, RLS.OVER_LIMIT]
        before = script_calls(client)
        for _ in range(20):
            r = svc.check("lc", [("user", user)])
            assert r.overall_code == RLS.OVER_LIMIT and r.statuses[0].current_limit.requests_per_unit == 2
        assert script_calls(client) == before  # not one store call
        assert (
            metric(
                metrics_text(svc),
                "ratelimit_service_rate_limit_over_limit_with_local_cache",
                domain="lc",
                key1="user",
            )
            == 20
        )
        # a cost-2 denial is never cached: a cost-1 request may still fit
        other = uuid.uuid4().hex
        svc.check("lc", [("user", other)])
        assert svc.check("lc", [("user", other)], hits=2).overall_code == RLS.OVER_LIMIT
        assert svc.check("lc", [("user", other)]).overall_code == RLS.OK
    finally:
        svc.stop()


def test_cache_entry_ends_when_the_key_could_pass(tmp_path: Path, default_redis: EmbeddedRedis) -> None:
    (tmp_path / "lc.yaml").write_text(CONFIG)
    svc = ServiceProcess(tmp_path, default_redis.url).start()
    try:
        key = uuid.uuid4().hex
        assert svc.check("lc", [("tb", key)]).overall_code == RLS.OK
        denied = svc.check("lc", [("tb", key)])
        assert denied.overall_code == RLS.OVER_LIMIT
        time.sleep(1.05)  # the bucket refills one token per second
        assert svc.check("lc", [("tb", key)]).overall_code == RLS.OK
    finally:
        svc.stop()
