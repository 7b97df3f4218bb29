"""Worker supervision with real processes: a killed worker is started again after a backoff, counted in the
shared metrics; a worker that keeps dying stops the whole service with a message that says so."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import psutil

from ratelimitd.store.embedded import EmbeddedRedis
from tests.integration.test_operations import limit_config, metric, metrics_text
from tests.service import RLS, ServiceProcess
from tests.topology import wait_for


def _workers(svc: ServiceProcess) -> list[psutil.Process]:
    assert svc.proc is not None
    return [p for p in psutil.Process(svc.proc.pid).children() if "spawn_main" in " ".join(p.cmdline())]


def test_a_killed_worker_is_replaced_and_a_crash_loop_stops_the_service(
    tmp_path: Path, default_redis: EmbeddedRedis
) -> None:
    (tmp_path / "ops.yaml").write_text(limit_config(1000))
    svc = ServiceProcess(
        tmp_path, default_redis.url, "--workers", "2", "--max-worker-restarts", "1", "--worker-restart-window", "60"
    ).start()
    try:
        wait_for(lambda: svc.log_text().count("serving gRPC") == 2, 10, "both workers serving")
        first, second = _workers(svc)
        first.send_signal(signal.SIGKILL)
        wait_for(lambda: svc.log_text().count("serving gRPC") == 3, 10, "a replacement worker serving")
        pids = {p.pid for p in _workers(svc)}
        assert len(pids) == 2 and first.pid not in pids and second.pid in pids
        assert "exited with -9; restarting it in 0.5 s (1 deaths within 60 s)" in svc.log_text()
        user = uuid.uuid4().hex
        assert all(svc.check("ops", [("user", user)]).overall_code == RLS.OK for _ in range(20))
        wait_for(lambda: metric(metrics_text(svc), "ratelimitd_worker_restarts_total") == 1, 5, "the restart counted")

        (replacement,) = pids - {second.pid}
        psutil.Process(replacement).send_signal(signal.SIGKILL)  # a second death within the window: a crash loop
        assert svc.proc is not None
        assert svc.proc.wait(15) == 1
        assert "died 2 times within 60 s, the last with exit code -9: it crash-loops, so ratelimitd stops" in (
            svc.log_text()
        )
        assert not psutil.pid_exists(second.pid) or psutil.Process(second.pid).status() == psutil.STATUS_ZOMBIE
    finally:
        svc.stop()
