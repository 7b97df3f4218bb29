"""Operating the service: hot reload under load, SIGHUP, metrics, the admin API, TLS and mutual TLS."""

from __future__ import annotations

import json
import os
import signal
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import grpc
import psutil
import pytest

from ratelimitd.store.embedded import EmbeddedRedis
from ratelimitd.v1 import ratelimitd_pb2 as pb
from ratelimitd.v1 import ratelimitd_pb2_grpc as pb_grpc
from tests.certs import make_certs
from tests.service import RLS, ServiceProcess, descriptor
from tests.topology import wait_for

pytestmark = pytest.mark.slow


def limit_config(n: int) -> str:
    return f"""domain: ops
descriptors:
  - key: user
    rate_limit: {{unit: hour, requests_per_unit: {n}, name: per-user}}
  - key: detailed
    detailed_metric: true
    rate_limit: {{unit: hour, requests_per_unit: 5}}
  - key: plan
    rate_limit: {{unit: month, requests_per_unit: 2, algorithm: quota, name: plan}}
"""


BROKEN = "domain: ops\ndescriptors:\n  - key: user\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n"


def metrics_text(svc: ServiceProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{svc.http_port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        named = line.startswith(name + "{") or line.startswith(name + " ")
        if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def current_limit(svc: ServiceProcess) -> int:
    return int(svc.check("ops", [("user", uuid.uuid4().hex)]).statuses[0].current_limit.requests_per_unit)


def test_hot_reload_under_load_never_fails_a_request(tmp_path: Path, default_redis: EmbeddedRedis) -> None:
    cfg = tmp_path / "ops.yaml"
    cfg.write_text(limit_config(1000))
    svc = ServiceProcess(tmp_path, default_redis.url, "--store-timeout", "1").start()
    stop = threading.Event()
    failures: list[str] = []
    answered = [0]

    def load() -> None:
        with grpc.insecure_channel(svc.target) as ch:
            from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

            stub = rls_pb2_grpc.RateLimitServiceStub(ch)
            while not stop.is_set():
                req = rls_pb2.RateLimitRequest(domain="ops", descriptors=[descriptor([("user", uuid.uuid4().hex)])])
                try:
                    r = stub.ShouldRateLimit(req, timeout=5)
                    if r.overall_code != RLS.OK:
                        failures.append(f"code {r.overall_code}")
                    answered[0] += 1
                except grpc.RpcError as err:
                    failures.append(f"{err.code()}: {err.details()}")

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(50):  # valid and invalid alternately
            cfg.write_text(limit_config(1000 + i) if i % 2 == 0 else BROKEN)
            time.sleep(0.06)
        cfg.write_text(limit_config(7))
        written = time.monotonic()
        wait_for(lambda: current_limit(svc) == 7, 2.0, "the new limit", interval=0.02)
        assert time.monotonic() - written < 2.0
    finally:
        stop.set()
        for t in threads:
            t.join()
    try:
        assert failures == [] and answered[0] > 100
        text = metrics_text(svc)
        assert metric(text, "ratelimit_service_config_load_error") >= 1
        assert metric(text, "ratelimit_service_config_load_success") >= 1
        assert f"{cfg}: descriptors[0].rate_limit: invalid rate limit unit 'fortnight'" in svc.log_text()
        assert "previous config stays in force" in svc.log_text()
    finally:
        svc.stop()


def test_sighup_forces_a_reload(tmp_path: Path, default_redis: EmbeddedRedis) -> None:
    cfg = tmp_path / "ops.yaml"
    cfg.write_text(limit_config(10))
    svc = ServiceProcess(cfg, default_redis.url, "--no-watch-config").start()
    try:
        assert current_limit(svc) == 10
        cfg.write_text(limit_config(20))
        time.sleep(0.5)
        assert current_limit(svc) == 10  # not watched
        assert svc.proc is not None
        svc.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: current_limit(svc) == 20, 2.0, "SIGHUP reload", interval=0.02)
    finally:
        svc.stop()


def test_metrics_per_rule_and_cardinality_safety(tmp_path: Path, default_redis: EmbeddedRedis) -> None:
    (tmp_path / "ops.yaml").write_text(limit_config(2))
    svc = ServiceProcess(tmp_path, default_redis.url).start()
    try:
        secret = uuid.uuid4().hex
        for _ in range(3):
            svc.check("ops", [("user", secret)])
        svc.check("unknown-domain", [("user", "x")])
        detailed = uuid.uuid4().hex
        svc.check("ops", [("detailed", detailed)])
        text = metrics_text(svc)
        labels = {"domain": "ops", "key1": "user"}
        assert metric(text, "ratelimit_service_rate_limit_total_hits", **labels) >= 3
        assert metric(text, "ratelimit_service_rate_limit_over_limit", **labels) >= 1
        assert metric(text, "ratelimit_service_domain_not_found_total") >= 1
        assert secret not in text  # no caller value becomes a label without detailed_metric
        assert f'key1="detailed_{detailed}"' in text
        method = {"grpc_method": "ShouldRateLimit"}
        assert metric(text, "ratelimit_service_response_time_seconds_count", **method) >= 5
        assert metric(text, "ratelimit_service_total_requests", **method) >= 5
        assert metric(text, "ratelimitd_store_call_seconds_count") >= 1
    finally:
        svc.stop()


def _admin_stub(target: str) -> pb_grpc.AdminStub:
    return pb_grpc.AdminStub(grpc.insecure_channel(target))


def _desc(**entries: str) -> pb.Descriptor:
    return pb.Descriptor(entries=[pb.Entry(key=k, value=v) for k, v in entries.items()])


def test_admin_api(tmp_path: Path, default_redis: EmbeddedRedis) -> None:
    (tmp_path / "ops.yaml").write_text(limit_config(3))
    token_file = tmp_path / "token"
    token_file.write_text("t0ken-" + uuid.uuid4().hex)
    svc = ServiceProcess(tmp_path / "ops.yaml", default_redis.url, "--admin-token-file", str(token_file)).start()
    auth = (("authorization", f"Bearer {token_file.read_text()}"),)
    stub = _admin_stub(svc.target)
    try:
        user = uuid.uuid4().hex
        svc.check("ops", [("user", user)], hits=2)
        with pytest.raises(grpc.RpcError) as err:
            stub.GetUsage(pb.UsageRequest(domain="ops", descriptor=_desc(user=user)), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        usage = stub.GetUsage(pb.UsageRequest(domain="ops", descriptor=_desc(user=user)), metadata=auth, timeout=5)
        assert usage.state.remaining == 1 and usage.state.limit == 3 and usage.redis_key.startswith("rl:{ops|")
        assert stub.Reset(pb.ResetRequest(domain="ops", descriptor=_desc(user=user)), metadata=auth).existed
        assert svc.check("ops", [("user", user)]).statuses[0].limit_remaining == 2
        customer = uuid.uuid4().hex
        svc.check("ops", [("plan", customer)], hits=2)
        assert svc.check("ops", [("plan", customer)]).overall_code == RLS.OVER_LIMIT
        topped = stub.AdjustQuota(
            pb.AdjustQuotaRequest(domain="ops", descriptor=_desc(plan=customer), delta=5), metadata=auth
        )
        assert topped.state.remaining == 5
        assert svc.check("ops", [("plan", customer)], hits=5).overall_code == RLS.OK
        assert svc.check("ops", [("plan", customer)]).overall_code == RLS.OVER_LIMIT
        with pytest.raises(grpc.RpcError) as err:
            stub.AdjustQuota(pb.AdjustQuotaRequest(domain="ops", descriptor=_desc(user=user), delta=1), metadata=auth)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not a quota" in (err.value.details() or "")
        rules = stub.ListConfig(pb.ListConfigRequest(), metadata=auth).rules
        assert "ops.user: 3 per hour, fixed_window (name: per-user)" in rules
        # HTTP face of the same API
        url = f"http://127.0.0.1:{svc.http_port}/v1/admin/usage"
        body = json.dumps({"domain": "ops", "entries": [{"key": "user", "value": user}]}).encode()
        with pytest.raises(urllib.error.HTTPError) as http_err:
            urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=5)
        assert http_err.value.code == 401
        req = urllib.request.Request(url, data=body, headers={"Authorization": auth[0][1]})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert b'"remaining": 2' in r.read()
        assert metric(metrics_text(svc), "ratelimitd_admin_unauthenticated_total") == 2
        assert "admin call without a valid token" in svc.log_text()
        assert token_file.read_text() not in svc.log_text()
    finally:
        svc.stop()


def test_admin_is_off_by_default_and_can_live_on_its_own_listener(tmp_path: Path, default_redis: EmbeddedRedis) -> None:
    (tmp_path / "ops.yaml").write_text(limit_config(3))
    svc = ServiceProcess(tmp_path, default_redis.url).start()
    try:
        with pytest.raises(grpc.RpcError) as err:
            _admin_stub(svc.target).ListConfig(pb.ListConfigRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        svc.stop()
    from ratelimitd.store.embedded import free_port

    admin_port = free_port()
    svc = ServiceProcess(
        tmp_path, default_redis.url, "--admin-listen", f"127.0.0.1:{admin_port}", "--admin-token", "sep-token"
    ).start()
    try:
        with pytest.raises(grpc.RpcError) as err:
            _admin_stub(svc.target).ListConfig(pb.ListConfigRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED  # not on the main listener
        rules = (
            _admin_stub(f"127.0.0.1:{admin_port}")
            .ListConfig(pb.ListConfigRequest(), metadata=(("authorization", "Bearer sep-token"),), timeout=5)
            .rules
        )
        assert len(rules) == 3
    finally:
        svc.stop()


def test_tls_and_mutual_tls(tmp_path: Path, default_redis: EmbeddedRedis) -> None:
    certs = make_certs(tmp_path)
    (tmp_path / "ops.yaml").write_text(limit_config(3))
    args = ("--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key))
    svc = ServiceProcess(tmp_path / "ops.yaml", default_redis.url, *args, "--tls-client-ca", str(certs.ca))
    svc.healthy = lambda: _https_ok(svc, certs)  # type: ignore[method-assign]
    svc.start()
    try:

        def channel(cert: Path | None, key: Path | None) -> grpc.Channel:
            creds = grpc.ssl_channel_credentials(
                root_certificates=certs.ca.read_bytes(),
                private_key=key.read_bytes() if key else None,
                certificate_chain=cert.read_bytes() if cert else None,
            )
            return grpc.secure_channel(svc.target, creds)

        req = pb.CheckRequest(domain="ops", descriptors=[_desc(user=uuid.uuid4().hex)])
        ok = pb_grpc.RateLimiterStub(channel(certs.client_cert, certs.client_key)).Check(req, timeout=5)
        assert ok.overall_code == pb.OK and ok.decisions[0].remaining == 2
        for cert, key in ((None, None), (certs.other_client_cert, certs.other_client_key)):
            with pytest.raises(grpc.RpcError) as err:
                pb_grpc.RateLimiterStub(channel(cert, key)).Check(req, timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            ctx = ssl.create_default_context(cafile=str(certs.ca))
            urllib.request.urlopen(f"https://127.0.0.1:{svc.http_port}/healthz", context=ctx, timeout=5)
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{svc.http_port}/healthz", timeout=5)  # plain HTTP refused
    finally:
        svc.stop()


def _https_ok(svc: ServiceProcess, certs) -> bool:  # type: ignore[no-untyped-def]
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{svc.http_port}/healthz", context=ctx, timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def test_workers_share_the_port_and_the_counters(tmp_path: Path, default_redis: EmbeddedRedis) -> None:
    (tmp_path / "ops.yaml").write_text(limit_config(50))
    with ServiceProcess(tmp_path, default_redis.url, "--workers", "2").start() as svc:
        wait_for(lambda: svc.log_text().count("serving gRPC") == 2, 10, "both workers serving")
        if len(os.sched_getaffinity(0)) >= 2:  # --cpu-affinity auto: a CPU of its own for each worker
            assert svc.proc is not None
            kids = [p for p in psutil.Process(svc.proc.pid).children() if "spawn_main" in " ".join(p.cmdline())]
            assert sorted(len(p.cpu_affinity()) for p in kids) == [1, 1]
            assert len({p.cpu_affinity()[0] for p in kids}) == 2
        user = uuid.uuid4().hex
        channels = [grpc.insecure_channel(svc.target) for _ in range(8)]  # connections spread over workers
        from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

        remaining = []
        for ch in channels * 3:
            req = rls_pb2.RateLimitRequest(domain="ops", descriptors=[descriptor([("user", user)])])
            remaining.append(
                rls_pb2_grpc.RateLimitServiceStub(ch).ShouldRateLimit(req, timeout=5).statuses[0].limit_remaining
            )
        assert sorted(remaining, reverse=True) == list(range(49, 49 - 24, -1))  # one shared counter
        # each worker adds its counts to the shared metrics at least once a second (metrics.FLUSH_SECONDS)
        hits = "ratelimit_service_rate_limit_total_hits"
        wait_for(lambda: metric(metrics_text(svc), hits, domain="ops", key1="user") == 24, 5, "both workers' hits")
        for ch in channels:
            ch.close()


def test_structured_logs_carry_request_ids(tmp_path: Path, default_redis: EmbeddedRedis) -> None:
    (tmp_path / "ops.yaml").write_text(limit_config(3))
    svc = ServiceProcess(tmp_path, default_redis.url, "--log-level", "debug").start()
    try:
        from envoy.service.ratelimit.v3 import rls_pb2

        req = rls_pb2.RateLimitRequest(domain="ops", descriptors=[descriptor([("user", uuid.uuid4().hex)])])
        svc.stub().ShouldRateLimit(req, metadata=(("x-request-id", "req-42"),), timeout=5)
        time.sleep(0.2)
        events = [json.loads(line) for line in svc.log_text().splitlines() if line.startswith("{")]
        assert events and all({"ts", "level", "logger", "msg"} <= e.keys() for e in events)
        decided = [e for e in events if e.get("request_id") == "req-42"]
        assert decided and decided[0]["msg"] == "decided" and decided[0]["code"] == "OK"
    finally:
        svc.stop()


def test_info_level_has_no_per_request_lines(tmp_path: Path, default_redis: EmbeddedRedis) -> None:
    (tmp_path / "ops.yaml").write_text(limit_config(3))
    svc = ServiceProcess(tmp_path, default_redis.url).start()
    try:
        lines_before = len(svc.log_text().splitlines())
        for _ in range(20):
            svc.check("ops", [("user", uuid.uuid4().hex)])
        assert len(svc.log_text().splitlines()) - lines_before <= 1  # at most the one-time script load
    finally:
        svc.stop()


def test_eviction_policy_warning(tmp_path: Path) -> None:
    (tmp_path / "ops.yaml").write_text(limit_config(3))
    server = EmbeddedRedis(extra_args=("--maxmemory-policy", "allkeys-lru")).start()
    svc = ServiceProcess(tmp_path, server.url).start()
    try:
        assert "maxmemory-policy is 'allkeys-lru', not 'noeviction'" in svc.log_text()
    finally:
        svc.stop()
        server.close()
