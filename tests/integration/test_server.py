"""The composition root run inside the test's own event loop (no subprocess): built from settings, started on
free ports against a real Redis, answering every face, reloading, and stopping cleanly. The subprocess and
multi-process tests elsewhere cover signals and workers."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import aiohttp
import grpc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from ratelimitd.server import Service
from ratelimitd.settings import Settings
from ratelimitd.store.embedded import EmbeddedRedis

RLS = rls_pb2.RateLimitResponse


def limits(n: int) -> str:
    return f"domain: inproc\ndescriptors:\n  - key: user\n    rate_limit: {{unit: hour, requests_per_unit: {n}}}\n"


def rls_request(user: str) -> rls_pb2.RateLimitRequest:
    entry = ratelimit_pb2.RateLimitDescriptor.Entry(key="user", value=user)
    return rls_pb2.RateLimitRequest(domain="inproc", descriptors=[ratelimit_pb2.RateLimitDescriptor(entries=[entry])])


async def test_the_service_runs_in_process(tmp_path: Path, default_redis: EmbeddedRedis) -> None:
    (tmp_path / "inproc.yaml").write_text(limits(2))
    settings = Settings(
        config=str(tmp_path),
        redis_url=default_redis.url,
        grpc_listen="127.0.0.1:0",
        http_listen="127.0.0.1:0",
        workers=1,
        watch_config=False,
    )
    service = Service(settings)
    await service.start()
    try:
        assert service.healthy and service.grpc_port and service.http_port
        user = uuid.uuid4().hex
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
            stub = rls_pb2_grpc.RateLimitServiceStub(channel)
            codes = [(await stub.ShouldRateLimit(rls_request(user), timeout=5)).overall_code for _ in range(3)]
            assert codes == [RLS.OK, RLS.OK, RLS.OVER_LIMIT]

            (tmp_path / "inproc.yaml").write_text(limits(5))
            assert service.reload("test")
            answer = await stub.ShouldRateLimit(rls_request(user), timeout=5)
            assert answer.statuses[0].current_limit.requests_per_unit == 5  # a new limit, a new counter
            assert answer.statuses[0].limit_remaining == 4

        body = {"domain": "inproc", "descriptors": [{"entries": [{"key": "user", "value": user}]}]}
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{service.http_port}"
            async with http.post(f"{base}/v1/check", data=json.dumps(body)) as r:
                assert r.status == 200 and (await r.json())["descriptors"][0]["remaining"] == 3
            async with http.get(f"{base}/metrics") as r:
                assert "ratelimit_service_config_load_success 1.0" in await r.text()
    finally:
        await service.stop()
    assert not service.healthy
