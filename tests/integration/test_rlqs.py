"""RLQS against two real service processes on one real Redis, driven by a gRPC client speaking Envoy's protocol:
a rule's rate is split between Envoys connected to different instances, and given back when one goes quiet;
unmatched, unlimited and shadow buckets are ALLOW_ALL; garbage ends the stream with INVALID_ARGUMENT."""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    rate_limit: {unit: hour, requests_per_unit: 100}
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 1000}
  - key: route
    value: batch
    rate_limit: {unit: minute, requests_per_unit: 60}
"""
Reports = rlqs_pb2.RateLimitQuotaUsageReports
Strategy = ratelimit_strategy_pb2.RateLimitStrategy


class FakeEnvoy:
    """One RLQS stream, as Envoy opens it; `report` sends one usage report and waits for the answer."""

    def __init__(self, svc: ServiceProcess, name: str, domain: str = "web") -> None:
        self.domain = domain
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
        return self.report_many([(bucket, allowed, denied)])

    def report_many(self, usages: list[tuple[dict[str, str], int, int]]) -> rlqs_pb2.RateLimitQuotaResponse:
        reports = Reports(domain=self.domain)
        for bucket, allowed, denied in usages:
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


def answered(answer: rlqs_pb2.RateLimitQuotaResponse) -> list[str]:
    """The bucket ids (their `user` or `route` value) the answer carries an assignment for."""
    return [
        a.bucket_id.bucket.get("user") or a.bucket_id.bucket["route"]
        for a in answer.bucket_action
        if a.HasField("quota_assignment_action")
    ]


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
        # a one-second window is over before the next report: the shares alone hold it, never DENY_ALL
        assert per_fill(one.report(api, 30)) == 9
        batch = {"route": "batch"}  # a minute window outlives a report: once spent, DENY_ALL until it has room
        assert per_fill(one.report(batch, 30)) == 1
        spent = one.report(batch, 40).bucket_action[0].quota_assignment_action
        assert spent.rate_limit_strategy.blanket_rule == Strategy.DENY_ALL
        assert 1 <= spent.assignment_time_to_live.seconds <= 11  # until the window ends, re-sent at each report

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


TOKEN = "rlqs-test-token"


def admin(svc: ServiceProcess, path: str, body: dict[str, object] | None = None) -> Any:
    req = urllib.request.Request(
        f"http://127.0.0.1:{svc.http_port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def test_caps_abandon_and_what_is_counted(tmp_path: Path) -> None:
    """Bucket caps per stream and per process (no assignment, counted by cap; a closed stream frees its share of
    the process cap), idle buckets abandoned, reported traffic counted per rule, charged to the RLS path's counter
    (shadow rules too) and shown in the console's fleet view."""
    store = EmbeddedRedis().start()
    (tmp_path / "web.yaml").write_text(CONFIG)
    caps = ("--rlqs-max-buckets-per-stream", "2", "--rlqs-max-buckets", "3", "--rlqs-abandon-after", "1")
    try:
        with ServiceProcess(tmp_path, store.url, *caps, "--admin-token", TOKEN).start() as svc:
            one, two = FakeEnvoy(svc, "envoy-1"), FakeEnvoy(svc, "envoy-2")
            try:
                u = [{"user": f"u{i}"} for i in range(6)]
                assert answered(one.report_many([(u[0], 5, 1), (u[1], 0, 0), (u[2], 1, 0)])) == ["u0", "u1"]
                assert svc.metric("ratelimitd_rlqs_buckets_refused_total", 'cap="stream"') == 1
                assert answered(two.report_many([(u[3], 1, 0), (u[4], 1, 0)])) == ["u3"]  # 3 held in this process
                assert svc.metric("ratelimitd_rlqs_buckets_refused_total", 'cap="process"') == 1
                assert svc.metric("ratelimitd_rlqs_buckets") == 3
                assert svc.metric("ratelimitd_rlqs_open_streams") == 2
                assert answered(one.report(u[0], 2)) == ["u0"]  # a held bucket is answered at the cap
                one.close()  # its two buckets are released
                deadline = time.monotonic() + 5
                while svc.metric("ratelimitd_rlqs_buckets") != 1:
                    assert time.monotonic() < deadline, "a closed stream's buckets were not released"
                    time.sleep(0.05)
                assert answered(two.report(u[5], 1)) == ["u5"]
                assert svc.metric("ratelimitd_rlqs_open_streams") == 1

                # per rule, as reported (the `user` rule: 5 + 1 + 1 + 1 allowed, 1 denied; refused buckets not)
                assert svc.metric("ratelimitd_rlqs_requests_total", 'key="user",verdict="allowed"') == 9
                assert svc.metric("ratelimitd_rlqs_requests_total", 'key="user",verdict="denied"') == 1
                usage = admin(svc, "/v1/admin/usage", {"domain": "web", "entries": [{"key": "user", "value": "u0"}]})
                assert usage["state"]["remaining"] == 1000 - 7
                three = FakeEnvoy(svc, "envoy-3")
                assert answered(three.report({"route": "trial"}, 4)) == ["trial"]  # shadow: ALLOW_ALL, charged
                usage = admin(
                    svc, "/v1/admin/usage", {"domain": "web", "entries": [{"key": "route", "value": "trial"}]}
                )
                assert usage["state"]["remaining"] == 100 - 4

                deadline = time.monotonic() + 5  # the fleet view (pushed every second)
                while True:
                    rules = admin(svc, "/v1/admin/stats")["rules"]
                    series = next(r["series"] for r in rules if r["rule"] == "user")
                    if [sum(row[i] for row in series) for i in (1, 2)] == [9, 1]:
                        break
                    assert time.monotonic() < deadline, series
                    time.sleep(0.2)

                time.sleep(1.2)  # u5 idle for longer than --rlqs-abandon-after
                idle = two.report(u[5], 0).bucket_action[0]
                assert idle.HasField("abandon_action")
                assert svc.metric("ratelimitd_rlqs_abandoned_total") == 1
                assert svc.metric("ratelimitd_rlqs_buckets") == 2  # u3 and trial
                three.close()
            finally:
                one.close()
                two.close()
    finally:
        store.close()
