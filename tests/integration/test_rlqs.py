"""RLQS against two real service processes on one real Redis, driven by a gRPC client speaking Envoy's protocol:
a rule's rate is split between Envoys connected to different instances, and given back when one goes quiet;
unmatched, unlimited and shadow buckets are ALLOW_ALL; garbage ends the stream with INVALID_ARGUMENT."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.service.rate_limit_quota.v3 import rlqs_pb2, rlqs_pb2_grpc
from envoy.type.v3 import ratelimit_strategy_pb2

from ratelimitd.store.embedded import EmbeddedRedis
from tests.service import ServiceProcess

CONFIG = """domain: web
descriptors:
  - key: route
    value: api
    rate_limit: {unit: second, requests_per_unit: 10}
  - key: route
    value: free
    rate_limit: {unlimited: true}
  - key: route
    value: trial
    shadow_mode: true
    rate_limit: {unit: second, requests_per_unit: 1}
"""
Reports = rlqs_pb2.RateLimitQuotaUsageReports
Strategy = ratelimit_strategy_pb2.RateLimitStrategy


class FakeEnvoy:
    """One RLQS stream, as Envoy opens it; `report` sends one usage report and waits for the answer."""

    def __init__(self, svc: ServiceProcess, name: str) -> None:
        self.outbox: queue.Queue[rlqs_pb2.RateLimitQuotaUsageReports | None] = queue.Queue()
        stub = rlqs_pb2_grpc.RateLimitQuotaServiceStub(grpc.insecure_channel(svc.target))
        self.answers = stub.StreamRateLimitQuotas(
            iter(self.outbox.get, None), metadata=(("ratelimitd-envoy-id", name),), timeout=60
        )
        # Answers and the pushes the server sends between reports arrive on one stream, in any order.
        self.inbox: queue.Queue[rlqs_pb2.RateLimitQuotaResponse | grpc.RpcError] = queue.Queue()
        threading.Thread(target=self._receive, daemon=True).start()

    def _receive(self) -> None:
        try:
            for answer in self.answers:
                self.inbox.put(answer)
        except grpc.RpcError as err:
            self.inbox.put(err)

    def report(self, bucket: dict[str, str], allowed: int, denied: int = 0) -> rlqs_pb2.RateLimitQuotaResponse:
        reports = Reports(domain="web")
        usage = reports.bucket_quota_usages.add()
        usage.bucket_id.bucket.update(bucket)
        usage.num_requests_allowed, usage.num_requests_denied = allowed, denied
        while not self.inbox.empty():  # earlier pushes
            self.inbox.get_nowait()
        self.outbox.put(reports)
        answer = self.inbox.get(timeout=10)
        if isinstance(answer, grpc.RpcError):
            raise answer
        return answer

    def close(self) -> None:
        self.outbox.put(None)


def per_fill(answer: rlqs_pb2.RateLimitQuotaResponse) -> int:
    action = answer.bucket_action[0].quota_assignment_action
    assert action.assignment_time_to_live.seconds == 11
    return int(action.rate_limit_strategy.token_bucket.tokens_per_fill.value)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    store = EmbeddedRedis().start()
    (tmp_path / "web.yaml").write_text(CONFIG)
    try:
        with ServiceProcess(tmp_path, store.url).start() as a, ServiceProcess(tmp_path, store.url).start() as b:
            yield a, b
    finally:
        store.close()


def test_one_rate_is_shared_by_envoys_on_different_instances(pair: tuple[ServiceProcess, ServiceProcess]) -> None:
    a, b = pair
    one, two = FakeEnvoy(a, "envoy-1"), FakeEnvoy(b, "envoy-2")
    try:
        api = {"route": "api", "user_agent": "curl"}  # extra entries the tree does not name are ignored
        # demand is allowed + denied; what was allowed is charged to the rule's counter (10 per second here)
        assert per_fill(one.report(api, 0, 50)) == 10  # alone (first report: 50 over Envoy's 5 s): the whole rate
        assert per_fill(two.report(api, 0, 50)) == 5  # both busy: half each, whichever instance they talk to
        pushed = one.inbox.get(timeout=3)  # between its reports, the first Envoy is told its smaller share
        assert isinstance(pushed, rlqs_pb2.RateLimitQuotaResponse) and per_fill(pushed) == 5
        time.sleep(1.0)
        assert per_fill(one.report(api, 0, 20)) == 5  # demand over the store's clock
        assert per_fill(two.report(api, 0)) == 1  # idle: a floor of one per second ...
        assert per_fill(one.report(api, 0, 20)) == 9  # ... and the rest goes to the busy one
        spent = one.report(api, 30).bucket_action[0].quota_assignment_action  # 30 allowed: the window is spent
        assert spent.rate_limit_strategy.blanket_rule == Strategy.DENY_ALL
        assert spent.assignment_time_to_live.seconds == 1  # until the 1-second window ends

    finally:
        one.close()
        two.close()


def test_unlimited_shadow_and_unknown_buckets_are_allow_all(pair: tuple[ServiceProcess, ServiceProcess]) -> None:
    a, _ = pair
    envoy = FakeEnvoy(a, "envoy-3")
    try:
        for bucket in ({"route": "free"}, {"route": "trial"}, {"route": "nope"}, {"other": "x"}):
            action = envoy.report(bucket, 100, 5).bucket_action[0].quota_assignment_action
            assert action.rate_limit_strategy.blanket_rule == Strategy.ALLOW_ALL, bucket
    finally:
        envoy.close()


def test_garbage_reports_end_the_stream_with_a_clear_error(pair: tuple[ServiceProcess, ServiceProcess]) -> None:
    a, _ = pair
    envoy = FakeEnvoy(a, "envoy-4")
    with pytest.raises(grpc.RpcError) as err:
        envoy.report({f"k{i}": "v" for i in range(17)}, 1)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "16 entries" in (err.value.details() or "")
    envoy.close()
    assert a.proc is not None and a.proc.poll() is None and "Traceback" not in a.log_text()
