"""A real Envoy 1.40 enforcing ratelimitd's RLQS assignments locally (envoy.filters.http.rate_limit_quota),
with the example config: no call to ratelimitd per request, and the rule's rate enforced by Envoy."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import pytest

from ratelimitd.store.embedded import EmbeddedRedis, free_port
from tests.e2e.gateways import ROOT, Process, envoy_binary, http_get
from tests.service import ServiceProcess

pytestmark = pytest.mark.slow
EXAMPLE = ROOT / "examples" / "envoy" / "rlqs"


def start_envoy(tmp: Path, rls_port: int, name: str) -> tuple[Process, int]:
    edge, upstream, admin = free_port(), free_port(), free_port()
    text = (
        (EXAMPLE / "envoy-rlqs.yaml")
        .read_text()
        .replace("port_value: 10010", f"port_value: {edge}")
        .replace("port_value: 10011", f"port_value: {upstream}")
        .replace("port_value: 9911", f"port_value: {admin}")
        .replace("port_value: 8081", f"port_value: {rls_port}")
        .replace("value: envoy-1", f"value: {name}")
    )
    path = tmp / f"{name}.yaml"
    path.write_text(text)
    proc = Process(
        [envoy_binary(), "-c", str(path), "--disable-hot-restart", "--log-level", "error"],
        f"http://127.0.0.1:{admin}/ready",
    ).start()
    return proc, edge


def metric(svc: ServiceProcess, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{svc.http_port}/metrics", timeout=5).read().decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def test_one_envoy_alone_gets_the_whole_rate_and_asks_nothing_per_request(tmp_path: Path) -> None:
    store = EmbeddedRedis().start()
    try:
        with ServiceProcess(EXAMPLE / "limits.yaml", store.url).start() as svc:
            envoy, edge = start_envoy(tmp_path, svc.grpc_port, "envoy-1")
            try:
                assert http_get(f"http://127.0.0.1:{edge}/api/x")[0] == 200  # the bucket's first report
                deadline = time.monotonic() + 10
                while metric(svc, "ratelimitd_rlqs_assignments_total") < 1:
                    assert time.monotonic() < deadline, "no assignment pushed"
                    time.sleep(0.1)
                time.sleep(1.1)  # a full bucket: 10 tokens
                allowed = denied = 0
                end = time.monotonic() + 3
                while time.monotonic() < end:
                    status = http_get(f"http://127.0.0.1:{edge}/api/x")[0]
                    allowed += status == 200
                    denied += status == 429
                assert 32 <= allowed <= 48, (allowed, denied)  # 10 burst + 10/s for 3 s, ± 20%
                assert denied > 0
                assert http_get(f"http://127.0.0.1:{edge}/other")[0] == 200  # no bucket: never limited
                assert metric(svc, "ratelimit_service_total_requests") == 0  # no per-request RLS call
            finally:
                envoy.stop()
    finally:
        store.close()


def hammer(edge: int, seconds: float, out: list[int]) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        out.append(http_get(f"http://127.0.0.1:{edge}/api/x")[0])


def test_two_envoys_on_two_instances_share_one_rate(tmp_path: Path) -> None:
    import threading

    store = EmbeddedRedis().start()
    envoys: list[Process] = []
    try:
        with (
            ServiceProcess(EXAMPLE / "limits.yaml", store.url).start() as a,
            ServiceProcess(EXAMPLE / "limits.yaml", store.url).start() as b,
        ):
            (p1, edge1), (p2, edge2) = (
                start_envoy(tmp_path, a.grpc_port, "envoy-1"),
                start_envoy(tmp_path, b.grpc_port, "envoy-2"),
            )
            envoys += [p1, p2]
            for edge in (edge1, edge2):
                assert http_get(f"http://127.0.0.1:{edge}/api/x")[0] == 200
            deadline = time.monotonic() + 10
            while metric(a, "ratelimitd_rlqs_assignments_total") + metric(b, "ratelimitd_rlqs_assignments_total") < 2:
                assert time.monotonic() < deadline, "no assignments pushed"
                time.sleep(0.1)
            time.sleep(1.1)
            results: tuple[list[int], list[int]] = ([], [])
            threads = [
                threading.Thread(target=hammer, args=(e, 4.0, r)) for e, r in zip((edge1, edge2), results, strict=True)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            ok = [r.count(200) for r in results]
            assert sum(ok) <= 1.3 * (10 * 4 + 10), ok  # the rule's 10/s and its burst, for both together
            assert all(0.35 * sum(ok) <= n <= 0.65 * sum(ok) for n in ok), ok  # each near half
            assert metric(a, "ratelimit_service_total_requests") + metric(b, "ratelimit_service_total_requests") == 0
    finally:
        for p in envoys:
            p.stop()
        store.close()
