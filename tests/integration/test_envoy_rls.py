"""Envoy RLS semantics through a real `ratelimitd serve` process and a real redis-server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ratelimitd.store.embedded import EmbeddedRedis
from tests.service import RLS, ServiceProcess, descriptor

CONFIG = """
domain: test
descriptors:
  - key: key1
    rate_limit: {unit: minute, requests_per_unit: 3, name: key1-limit}
  - key: hour
    rate_limit: {unit: hour, requests_per_unit: 10}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: unl
    rate_limit: {unlimited: true}
  - key: banned
    rate_limit: {unit: minute, requests_per_unit: 0, name: banned}
  - key: vip
    rate_limit: {unit: minute, requests_per_unit: 2, name: vip, replaces: [{name: banned}]}
  - key: q1
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: q2
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: bucket
    rate_limit: {unit: minute, requests_per_unit: 60, burst: 2, algorithm: token_bucket}
  - key: shadowquota
    quota_mode: true
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: allowed
    value: yes
"""


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("config")
    (d / "test.yaml").write_text(CONFIG)
    return d


@pytest.fixture(scope="module")
def service(config_dir: Path, default_redis: EmbeddedRedis) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(config_dir, default_redis.url).start()
    yield svc
    assert svc.stop() == 0


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex


def test_ok_until_limit_then_over_limit(service: ServiceProcess, uid: str) -> None:
    codes = []
    for _ in range(4):
        r = service.check("test", [("key1", uid)])
        codes.append(r.overall_code)
    assert codes == [RLS.OK] * 3 + [RLS.OVER_LIMIT]
    st = r.statuses[0]
    assert st.code == RLS.OVER_LIMIT and st.limit_remaining == 0
    assert st.current_limit.requests_per_unit == 3 and st.current_limit.unit == RLS.RateLimit.MINUTE
    assert st.current_limit.name == "key1-limit"
    assert 0 < st.duration_until_reset.seconds <= 60


def test_remaining_counts_down(service: ServiceProcess, uid: str) -> None:
    assert [service.check("test", [("key1", uid)]).statuses[0].limit_remaining for _ in range(3)] == [2, 1, 0]


def test_request_hits_addend_is_the_cost(service: ServiceProcess, uid: str) -> None:
    assert service.check("test", [("key1", uid)], hits=2).statuses[0].limit_remaining == 1
    assert service.check("test", [("key1", uid)], hits=2).overall_code == RLS.OVER_LIMIT
    assert service.check("test", [("key1", uid)], hits=1).overall_code == RLS.OK


def test_descriptor_hits_addend_overrides_and_zero_peeks(service: ServiceProcess, uid: str) -> None:
    r = service.check("test", descriptor([("key1", uid)], hits=3), hits=1)
    assert r.overall_code == RLS.OK and r.statuses[0].limit_remaining == 0
    peek = service.check("test", descriptor([("key1", uid)], hits=0))
    assert peek.overall_code == RLS.OVER_LIMIT  # a peek reports exhaustion


def test_peek_consumes_nothing(service: ServiceProcess, uid: str) -> None:
    for _ in range(5):
        r = service.check("test", descriptor([("key1", uid)], hits=0))
        assert r.overall_code == RLS.OK and r.statuses[0].limit_remaining == 3


def test_denied_request_consumes_nothing(service: ServiceProcess, uid: str) -> None:
    service.check("test", [("key1", uid)], hits=3)
    for _ in range(5):
        assert service.check("test", [("key1", uid)]).overall_code == RLS.OVER_LIMIT
    assert service.check("test", descriptor([("key1", uid)], hits=0)).statuses[0].code == RLS.OVER_LIMIT


def test_limit_override_replaces_config(service: ServiceProcess, uid: str) -> None:
    d = descriptor([("key1", uid)], limit=(1, RLS.RateLimit.HOUR))
    first, second = service.check("test", d), service.check("test", d)
    assert first.overall_code == RLS.OK and second.overall_code == RLS.OVER_LIMIT
    assert first.statuses[0].current_limit.requests_per_unit == 1
    assert first.statuses[0].current_limit.unit == RLS.RateLimit.HOUR
    # the configured limit's counter was not touched
    assert service.check("test", [("key1", uid)]).statuses[0].limit_remaining == 2


def test_override_on_unknown_domain_is_ignored(service: ServiceProcess, uid: str) -> None:
    r = service.check("nope", descriptor([("key1", uid)], limit=(0, RLS.RateLimit.HOUR)))
    assert r.overall_code == RLS.OK and not r.statuses[0].HasField("current_limit")


def test_unlimited(service: ServiceProcess, uid: str) -> None:
    for _ in range(5):
        r = service.check("test", [("unl", uid)])
        assert r.overall_code == RLS.OK and r.statuses[0].limit_remaining == 4294967295
        assert not r.statuses[0].HasField("current_limit")


def test_shadow_mode_counts_but_never_denies(service: ServiceProcess, uid: str) -> None:
    first = service.check("test", [("shadow", uid)])
    assert first.statuses[0].limit_remaining == 0 and first.statuses[0].current_limit.requests_per_unit == 1
    for _ in range(3):
        r = service.check("test", [("shadow", uid)])
        assert r.overall_code == RLS.OK and r.statuses[0].code == RLS.OK
        assert r.statuses[0].current_limit.requests_per_unit == 1 and r.statuses[0].limit_remaining == 0


def test_unknown_domain_and_unmatched_descriptor_are_ok(service: ServiceProcess, uid: str) -> None:
    r = service.check("other-domain", [("key1", uid)])
    assert r.overall_code == RLS.OK and len(r.statuses) == 1 and not r.statuses[0].HasField("current_limit")
    r = service.check("test", [("nothing", uid)], [("key1", uid), ("deeper", "x")], [("allowed", "yes")])
    assert r.overall_code == RLS.OK and len(r.statuses) == 3
    assert all(not s.HasField("current_limit") for s in r.statuses)


def test_replaces_drops_the_named_rule(service: ServiceProcess, uid: str) -> None:
    assert service.check("test", [("banned", uid)]).overall_code == RLS.OVER_LIMIT
    r = service.check("test", [("banned", uid)], [("vip", uid)])
    assert r.overall_code == RLS.OK
    assert r.statuses[0].code == RLS.OK and not r.statuses[0].HasField("current_limit")
    assert r.statuses[1].current_limit.name == "vip"


def test_statuses_follow_request_order(service: ServiceProcess, uid: str) -> None:
    r = service.check("test", [("unl", uid)], [("key1", uid)], [("nothing", "x")], [("hour", uid)])
    assert [s.current_limit.requests_per_unit for s in r.statuses] == [0, 3, 0, 10]


def test_all_or_nothing_across_descriptors(service: ServiceProcess, uid: str) -> None:
    service.check("test", [("key1", uid)], hits=2)
    # key1 has 1 left: a request needing 2 of it is denied, and its other descriptor is not charged
    r = service.check("test", [("hour", uid)], descriptor([("key1", uid)], hits=2))
    assert r.overall_code == RLS.OVER_LIMIT
    assert r.statuses[0].code == RLS.OK and r.statuses[0].limit_remaining == 10  # nothing consumed
    assert r.statuses[1].code == RLS.OVER_LIMIT
    service.check("test", [("key1", uid)])  # exhaust key1 (now answered from the local cache too)
    for _ in range(4):
        r = service.check("test", [("hour", uid)], [("key1", uid)])
        assert r.overall_code == RLS.OVER_LIMIT and r.statuses[1].code == RLS.OVER_LIMIT
        assert r.statuses[0].code == RLS.OK
    assert service.check("test", descriptor([("hour", uid)], hits=0)).statuses[0].limit_remaining == 10


def test_quota_mode_over_only_when_all_quota_descriptors_over(service: ServiceProcess, uid: str) -> None:
    both = ([("q1", uid)], [("q2", uid)])
    assert service.check("test", *both).overall_code == RLS.OK  # q1 1/1, q2 1/2
    r = service.check("test", *both)  # q1 over, q2 2/2
    assert r.overall_code == RLS.OK and r.statuses[0].code == RLS.OVER_LIMIT and r.statuses[1].code == RLS.OK
    assert service.check("test", *both).overall_code == RLS.OVER_LIMIT  # both over


def test_shadow_mode_never_denies_even_in_quota_mode(service: ServiceProcess, uid: str) -> None:
    """Shadow mode wins over quota_mode: the 3rd request of 2 per minute is counted as shadow-denied, and the
    overall code follows from the statuses (all OK)."""
    answers = [service.check("test", [("shadowquota", uid)]) for _ in range(3)]
    assert [(r.overall_code, [s.code for s in r.statuses]) for r in answers] == [(RLS.OK, [RLS.OK])] * 3


def test_quota_mode_with_hard_limit(service: ServiceProcess, uid: str) -> None:
    service.check("test", [("key1", uid)], hits=3)
    assert service.check("test", [("q2", uid)], [("key1", uid)]).overall_code == RLS.OVER_LIMIT


def test_token_bucket_through_the_service(service: ServiceProcess, uid: str) -> None:
    codes = [service.check("test", [("bucket", uid)]).overall_code for _ in range(3)]
    assert codes == [RLS.OK, RLS.OK, RLS.OVER_LIMIT]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: RLSRequest(domain="", descriptors=[descriptor([("k", "v")])]), "domain must not be empty"),
        (lambda: RLSRequest(domain="test"), "descriptor list must not be empty"),
        (lambda: RLSRequest(domain="test", descriptors=[descriptor([])]), "descriptors[0] has no entries"),
        (
            lambda: RLSRequest(domain="test", descriptors=[descriptor([("k", "v")]), descriptor([("", "v")])]),
            "descriptors[1].entries[0] has an empty key",
        ),
        (lambda: RLSRequest(domain="test", descriptors=[descriptor([("k", "v")])] * 65), "too many descriptors"),
        (lambda: RLSRequest(domain="test", descriptors=[descriptor([("k", "v" * 300)])]), "longer than 256 bytes"),
        (lambda: RLSRequest(domain="test", descriptors=[descriptor([("k", "v")], hits=10**10)]), "exceeds"),
        (lambda: RLSRequest(domain="test", descriptors=[descriptor([("k", "v")], limit=(1, 0))]), "known unit"),
    ],
)
def test_invalid_requests_get_invalid_argument(service: ServiceProcess, build, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        service.stub().ShouldRateLimit(build(), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (err.value.details() or "")
    assert service.check("test", [("unl", "x")]).overall_code == RLS.OK  # still serving


def test_health_and_reflection(service: ServiceProcess) -> None:
    assert service.channel is not None
    health = health_pb2_grpc.HealthStub(service.channel)
    for name in ("", "envoy.service.ratelimit.v3.RateLimitService"):
        resp = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(service.channel)
    answers = list(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in answers[0].list_services_response.service}
    assert "envoy.service.ratelimit.v3.RateLimitService" in names


def test_script_flush_is_survived(service: ServiceProcess, default_redis: EmbeddedRedis, uid: str) -> None:
    assert service.check("test", [("key1", uid)]).overall_code == RLS.OK
    redis.Redis.from_url(default_redis.url).script_flush()
    r = service.check("test", [("key1", uid)])
    assert r.overall_code == RLS.OK and r.statuses[0].limit_remaining == 1


def test_response_headers(config_dir: Path, default_redis: EmbeddedRedis, uid: str) -> None:
    with ServiceProcess(config_dir, default_redis.url, "--response-headers").start() as svc:
        r = svc.check("test", [("hour", uid)], [("key1", uid)])
        headers = {h.key: h.value for h in r.response_headers_to_add}
        assert headers["RateLimit-Limit"] == "3" and headers["RateLimit-Remaining"] == "2"
        assert 0 < int(headers["RateLimit-Reset"]) <= 60
        svc.check("test", [("key1", uid)], hits=2)
        r = svc.check("test", [("hour", uid)], [("key1", uid)])
        headers = {h.key: h.value for h in r.response_headers_to_add}
        assert headers["RateLimit-Remaining"] == "0" and headers["RateLimit-Limit"] == "3"


from envoy.service.ratelimit.v3.rls_pb2 import RateLimitRequest as RLSRequest  # noqa: E402
