"""The RLQS stream's bookkeeping without a store: bucket caps per stream and per process, and the refresh that
re-reads shares between reports in bounded turns. The engine is a stand-in that answers every bucket with the
same token bucket and records which buckets were asked; the event loop's clock is virtual (looptime)."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest
from envoy.service.rate_limit_quota.v3 import rlqs_pb2

from ratelimitd.api.rlqs import REFRESH_PER_SECOND, RlqsService, _Stream
from ratelimitd.engine.rlqs import Assignment, RlqsEngine
from ratelimitd.metrics import Metrics

pytestmark = pytest.mark.looptime
BUCKET = Assignment("token_bucket", 5, 5)


class Engine:
    def __init__(self) -> None:
        self.refreshed: list[str] = []

    async def assign(self, domain: str, envoy: str, bucket: dict[str, str], allowed: int, denied: int) -> Assignment:
        return BUCKET

    async def refresh(self, domain: str, envoy: str, bucket: dict[str, str]) -> Assignment | None:
        self.refreshed.append(bucket["user"])
        return BUCKET


def report(*users: str) -> rlqs_pb2.RateLimitQuotaUsageReports:
    reports = rlqs_pb2.RateLimitQuotaUsageReports(domain="web")
    for user in users:
        usage = reports.bucket_quota_usages.add()
        usage.bucket_id.bucket["user"] = user
        usage.num_requests_allowed = 1
    return reports


def service(engine: Engine, per_stream: int, total: int) -> RlqsService:
    return RlqsService(cast(RlqsEngine, engine), Metrics(), per_stream, total)


async def test_caps_per_stream_and_per_process() -> None:
    svc = service(Engine(), per_stream=2, total=3)
    one, two = _Stream("e1"), _Stream("e2")
    answered = await svc._answer(report("a", "b", "c"), one)
    assert [a.bucket_id.bucket["user"] for a in answered.bucket_action] == ["a", "b"]
    answered = await svc._answer(report("d", "e"), two)
    assert [a.bucket_id.bucket["user"] for a in answered.bucket_action] == ["d"]  # 3 held in the process
    answered = await svc._answer(report("a"), one)  # a held bucket is still answered at the cap
    assert [a.bucket_id.bucket["user"] for a in answered.bucket_action] == ["a"]
    assert svc.held == 3


async def test_refresh_takes_at_most_its_share_of_buckets_per_second_in_turns() -> None:
    engine = Engine()
    svc = service(engine, per_stream=1000, total=1000)
    stream = _Stream("e1")
    n = 2 * REFRESH_PER_SECOND + 50
    await svc._answer(report(*(f"u{i}" for i in range(n))), stream)
    task = asyncio.create_task(svc._refresh(stream))
    await asyncio.sleep(1.5)
    assert len(engine.refreshed) == REFRESH_PER_SECOND  # one round: bounded
    await asyncio.sleep(2.0)
    task.cancel()
    assert len(engine.refreshed) == 3 * REFRESH_PER_SECOND
    assert set(engine.refreshed) == {f"u{i}" for i in range(n)}  # three rounds cover every bucket
