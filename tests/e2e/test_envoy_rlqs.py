"""A real Envoy 1.40 enforcing ratelimitd's RLQS assignments locally (envoy.filters.http.rate_limit_quota),
with the example config: no call to ratelimitd per request, and the rule's rate enforced by Envoy."""

from __future__ import annotations

import json
import signal
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


def test_one_envoy_alone_gets_the_whole_rate_and_asks_nothing_per_request(tmp_path: Path) -> None:
    store = EmbeddedRedis().start()
    try:
        with ServiceProcess(EXAMPLE / "limits.yaml", store.url).start() as svc:
            envoy, edge = start_envoy(tmp_path, svc.grpc_port, "envoy-1")
            try:
                assert http_get(f"http://127.0.0.1:{edge}/api/x")[0] == 200  # the bucket's first report
                deadline = time.monotonic() + 10
                while svc.metric("ratelimitd_rlqs_assignments_total") < 1:
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
                assert svc.metric("ratelimit_service_total_requests") == 0  # no per-request RLS call
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
            while a.metric("ratelimitd_rlqs_assignments_total") + b.metric("ratelimitd_rlqs_assignments_total") < 2:
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
            assert a.metric("ratelimit_service_total_requests") + b.metric("ratelimit_service_total_requests") == 0
    finally:
        for p in envoys:
            p.stop()
        store.close()


TOKEN = "rlqs-e2e-token"


def statuses(url: str, seconds: float, headers: dict[str, str] | None = None) -> list[tuple[float, int]]:
    """(seconds since start, status) of requests sent every 20 ms for `seconds`."""
    out: list[tuple[float, int]] = []
    start = time.monotonic()
    while (now := time.monotonic() - start) < seconds:
        out.append((now, http_get(url, headers)[0]))
        time.sleep(max(0.0, start + now + 0.02 - time.monotonic()))
    return out


def runs(seen: list[tuple[float, int]]) -> list[tuple[int, float, float]]:
    """Runs of one status: (status, first time, last time)."""
    out: list[tuple[int, float, float]] = []
    for t, status in seen:
        if out and out[-1][0] == status:
            out[-1] = (status, out[-1][1], t)
        else:
            out.append((status, t, t))
    return out


def wait_for(what: str, ok: object, seconds: float) -> float:
    """Poll `ok()` every 50 ms; the time it took."""
    start = time.monotonic()
    while not ok():  # type: ignore[operator]
        assert time.monotonic() - start < seconds, f"{what}: not within {seconds} s"
        time.sleep(0.05)
    return time.monotonic() - start


def reset(svc: ServiceProcess, customer: str) -> None:
    body = json.dumps(
        {"domain": "web", "entries": [{"key": "route", "value": "plan"}, {"key": "customer", "value": customer}]}
    )
    req = urllib.request.Request(
        f"http://127.0.0.1:{svc.http_port}/v1/admin/reset",
        data=body.encode(),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    urllib.request.urlopen(req, timeout=5).read()


def test_quota_kill_restart_and_abandon(tmp_path: Path) -> None:
    """A calendar quota spent → 429 for that customer until it is reset; ratelimitd killed → Envoy keeps its last
    assignment until the TTL, then its expired-assignment fallback (DENY_ALL for 3 s), then no_assignment
    (ALLOW_ALL); restarted → assignments again within 6 s; idle buckets abandoned and not reported again; no
    per-request RLS call throughout."""
    store = EmbeddedRedis().start()
    envoy: Process | None = None
    try:
        svc = ServiceProcess(EXAMPLE / "limits.yaml", store.url, "--rlqs-abandon-after", "6", "--admin-token", TOKEN)
        with svc.start():
            envoy, edge = start_envoy(tmp_path, svc.grpc_port, "envoy-1")
            plan = f"http://127.0.0.1:{edge}/plan"
            c1, c2 = {"x-customer": "c1"}, {"x-customer": "c2"}
            # Before its first assignment c1's bucket is under the no_assignment fallback (ALLOW_ALL), then it
            # holds the 1-token-per-second floor share a 5-per-day rate gets. Once Envoy has let 6 through and
            # reported them, they are charged to c1's quota, which is then spent: DENY_ALL for c1 only.
            allowed, deadline = 0, time.monotonic() + 15
            while allowed < 6:
                assert time.monotonic() < deadline, allowed
                allowed += http_get(plan, c1)[0] == 200
                time.sleep(0.05)
            charged = 'key="route_plan.customer",verdict="allowed"'
            wait_for("c1's report", lambda: svc.metric("ratelimitd_rlqs_requests_total", charged) >= allowed, 8)
            time.sleep(0.3)
            assert {s for _, s in statuses(plan, 1.0, c1)} == {429}
            assert http_get(plan, c2)[0] == 200
            reset(svc, "c1")  # an admin reset (or a new day): pushed within about a second
            wait_for("c1 allowed after the reset", lambda: http_get(plan, c1)[0] == 200, 3)

            api = f"http://127.0.0.1:{edge}/api/x"
            limited = lambda: 429 in [http_get(api)[0] for _ in range(30)]  # noqa: E731
            wait_for("/api limited", limited, 8)
            assert svc.metric("ratelimit_service_total_requests") == 0  # no per-request RLS call

            svc.stop(signal.SIGKILL)
            seen = runs(statuses(api, 17.0))
            # the last assignment (11 s TTL) goes on limiting: 200s and 429s mixed, then only 429 (DENY_ALL) for
            # about the 3 s fallback, then only 200 (no assignment: ALLOW_ALL)
            long_runs = [(s, round(b - a, 1), round(a, 1)) for s, a, b in seen if b - a >= 1.5]
            assert [s for s, *_ in long_runs][-2:] == [429, 200], long_runs
            denied = long_runs[-2]
            assert 2.0 <= denied[1] <= 4.0 and 4.0 <= denied[2] <= 13.0, long_runs
            assert any(s == 200 for s, a, _ in seen if a < denied[2]), "the last assignment was not kept until its TTL"

            svc.start()
            took = wait_for(
                "an assignment after the restart", lambda: svc.metric("ratelimitd_rlqs_assignments_total") >= 1, 7
            )
            assert took <= 6.0
            wait_for("/api limited again", limited, 3)

            # no more traffic: every bucket is reported idle, abandoned after 6 s, and Envoy stops reporting it
            wait_for("buckets abandoned", lambda: svc.metric("ratelimitd_rlqs_buckets") == 0, 18)
            assert svc.metric("ratelimitd_rlqs_abandoned_total") >= 2  # c1 and /api at least
            assigned = svc.metric("ratelimitd_rlqs_assignments_total")
            time.sleep(5.5)  # one more report interval: a bucket reported again would be held and assigned again
            assert svc.metric("ratelimitd_rlqs_buckets") == 0
            assert svc.metric("ratelimitd_rlqs_assignments_total") == assigned
            assert svc.metric("ratelimit_service_total_requests") == 0
    finally:
        if envoy is not None:
            envoy.stop()
        store.close()
