"""The service keeps answering while the store fails, and recovers by itself (real processes only)."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import redis

from ratelimitd.store.embedded import EmbeddedRedis
from tests.service import RLS, ServiceProcess
from tests.topology import LocalSentinel, wait_for

pytestmark = pytest.mark.slow

CONFIG = """
domain: f
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 5}
  - key: plan
    rate_limit: {unit: month, requests_per_unit: 100, algorithm: quota}
"""
TIMEOUT = 0.05
MARGIN = 0.25  # a shared 2-core machine; the bound under test is the timeout, not the margin


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "f.yaml").write_text(CONFIG)
    return tmp_path / "f.yaml"


@pytest.fixture
def store() -> Iterator[EmbeddedRedis]:
    try:  # Redis >= 7 and Valkey refuse DEBUG unless enabled; Redis 6.2 does not know the option
        server = EmbeddedRedis(extra_args=("--enable-debug-command", "local")).start()
    except RuntimeError:
        server = EmbeddedRedis().start()
    yield server
    server.close()


def timed_check(svc: ServiceProcess, user: str) -> tuple[float, RLS]:
    start = time.monotonic()
    r = svc.check("f", [("user", user)])
    return time.monotonic() - start, r


def real_decision(svc: ServiceProcess) -> bool:
    """One hit on a fresh key leaves 4 of 5 only when the store decided (failure mode reports 5)."""
    return svc.check("f", [("user", uuid.uuid4().hex)]).statuses[0].limit_remaining == 4


@pytest.mark.parametrize(("mode", "code"), [("allow", RLS.OK), ("deny", RLS.OVER_LIMIT)])
def test_store_down_is_answered_within_timeout(config: Path, store: EmbeddedRedis, mode: str, code: int) -> None:
    with ServiceProcess(config, store.url, "--store-timeout", str(TIMEOUT), "--failure-mode", mode).start() as svc:
        assert real_decision(svc)
        store.stop()
        for _ in range(30):
            elapsed, r = timed_check(svc, uuid.uuid4().hex)
            assert r.overall_code == code
            assert elapsed < TIMEOUT + MARGIN
        assert svc.log_text().count("store unavailable") == 1  # once per incident, not per request
        store.start()  # back, empty: scripts are gone too
        started = time.monotonic()
        wait_for(lambda: real_decision(svc), 2.0, "normal decisions after the store returned", interval=0.05)
        assert time.monotonic() - started < 2.0
        assert "store reachable again" in svc.log_text()


def test_script_flush_under_load_fails_nothing(config: Path, store: EmbeddedRedis) -> None:
    svc = ServiceProcess(config, store.url, "--store-timeout", "1").start()
    stop = threading.Event()
    client = redis.Redis.from_url(store.url)

    def flusher() -> None:
        while not stop.is_set():
            client.script_flush()
            time.sleep(0.005)

    t = threading.Thread(target=flusher)
    t.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            users = [uuid.uuid4().hex for _ in range(400)]
            remaining = list(pool.map(lambda u: svc.check("f", [("user", u)]).statuses[0].limit_remaining, users))
        assert remaining == [4] * len(users)  # every one a real store decision, none failed
        assert "store unavailable" not in svc.log_text()
    finally:
        stop.set()
        t.join()
        svc.stop()


def test_slow_store_answers_within_timeout_and_bounded_memory(config: Path, store: EmbeddedRedis) -> None:
    with ServiceProcess(config, store.url, "--store-timeout", str(TIMEOUT)).start() as svc:
        assert svc.proc is not None and store.proc is not None
        proc = psutil.Process(svc.proc.pid)
        for _ in range(50):
            real_decision(svc)
        rss_before = proc.memory_info().rss
        os.kill(store.proc.pid, signal.SIGSTOP)  # a store that accepts nothing and answers nothing
        try:
            with ThreadPoolExecutor(16) as pool:
                times = list(pool.map(lambda _: timed_check(svc, uuid.uuid4().hex)[0], range(2000)))
        finally:
            os.kill(store.proc.pid, signal.SIGCONT)
        times.sort()
        assert times[len(times) // 2] < TIMEOUT + MARGIN
        assert times[int(len(times) * 0.99)] < TIMEOUT + 4 * MARGIN
        growth = proc.memory_info().rss - rss_before
        assert growth < 40 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB"
        wait_for(lambda: real_decision(svc), 2.0, "recovery after the pause", interval=0.05)


def test_debug_sleep_is_answered_within_timeout(config: Path, store: EmbeddedRedis) -> None:
    svc = ServiceProcess(config, store.url, "--store-timeout", str(TIMEOUT)).start()
    sleeper = threading.Thread(target=lambda: redis.Redis.from_url(store.url).execute_command("DEBUG", "SLEEP", "1.5"))
    try:
        assert real_decision(svc)
        sleeper.start()
        time.sleep(0.1)
        for _ in range(10):
            elapsed, r = timed_check(svc, uuid.uuid4().hex)
            assert r.overall_code == RLS.OK and elapsed < TIMEOUT + MARGIN
        sleeper.join()
        wait_for(lambda: real_decision(svc), 2.0, "recovery after DEBUG SLEEP", interval=0.05)
    finally:
        svc.stop()


def test_quota_usage_survives_a_store_restart_with_aof(config: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    server = EmbeddedRedis(extra_args=("--appendonly", "yes", "--appendfsync", "always"), workdir=str(data)).start()
    svc = ServiceProcess(config, server.url, "--store-timeout", "1").start()
    try:
        customer = uuid.uuid4().hex
        assert svc.check("f", [("plan", customer)], hits=37).statuses[0].limit_remaining == 63
        server.stop()
        server.start()
        wait_for(
            lambda: svc.check("f", [("plan", uuid.uuid4().hex)]).statuses[0].limit_remaining == 99,
            5,
            "the restarted store",
        )
        assert svc.check("f", [("plan", customer)]).statuses[0].limit_remaining == 62
    finally:
        svc.stop()
        server.close()


def test_sentinel_failover(config: Path) -> None:
    topo = LocalSentinel().start()
    svc = ServiceProcess(config, topo.url, "--store-timeout", "0.2").start()
    try:
        assert real_decision(svc)
        old = topo.current_master_port()
        topo.master.stop()
        wait_for(lambda: topo.current_master_port() != old, 30, "sentinels to promote the replica", interval=0.2)
        wait_for(lambda: real_decision(svc), 10, "decisions on the new master", interval=0.1)
    finally:
        svc.stop()
        topo.close()


def test_a_connection_closed_under_the_client_is_a_store_failure(default_redis: EmbeddedRedis) -> None:
    """A write to a transport closed under redis-py (seen in a cluster failover: the peer closed it between
    connect and handshake) must give the failure mode, never an internal error. What is raised depends on
    the versions installed: uvloop's RuntimeError under redis-py 7, redis-py's own ConnectionError ("closed
    by the server before write") from 8 on; users must see the same either way."""
    import asyncio

    import uvloop
    from redis import asyncio as aioredis
    from redis.exceptions import RedisError

    from ratelimitd.store.checks import Check, CheckArgs, CheckBatch
    from ratelimitd.store.interface import StoreUnavailable
    from ratelimitd.store.redis_store import RedisStore

    async def scenario() -> BaseException | None:
        client = aioredis.Redis.from_url(default_redis.url, single_connection_client=True)
        store = RedisStore(client, timeout=1.0)
        await client.ping()
        assert client.connection is not None
        client.connection._writer.transport.close()  # type: ignore[union-attr]
        check = Check(f"rl:closed:{uuid.uuid4().hex}", CheckArgs(1, 1, 0, 10, 60, 0, 0, 0))
        try:
            await store.evaluate([CheckBatch((check,), False)])
        except BaseException as err:
            return err
        finally:
            await client.aclose()
        return None

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        raised = runner.run(scenario())
    assert isinstance(raised, StoreUnavailable), f"expected StoreUnavailable, got {raised!r}"
    assert isinstance(raised.__cause__, (RuntimeError, RedisError, OSError)), repr(raised.__cause__)
