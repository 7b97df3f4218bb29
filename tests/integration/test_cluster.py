"""ratelimitd on a real 6-node Redis Cluster: per-slot batches, cross-slot all-or-nothing, failover."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from ratelimitd.store.keys import KeyEncoder, hash_slot
from tests.service import RLS, ServiceProcess, descriptor
from tests.topology import LocalCluster, wait_for

pytestmark = pytest.mark.slow

CONFIG = """
domain: c
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 3}
  - key: ip
    rate_limit: {unit: hour, requests_per_unit: 2, algorithm: sliding_log}
  - key: tb
    rate_limit: {unit: hour, requests_per_unit: 5, algorithm: token_bucket}
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    c = LocalCluster().start()
    yield c
    c.close()


@pytest.fixture(scope="module")
def service(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    d = tmp_path_factory.mktemp("cluster-config")
    (d / "c.yaml").write_text(CONFIG)
    svc = ServiceProcess(d / "c.yaml", cluster.url, "--store-timeout", "0.2").start()
    yield svc
    svc.stop()


def test_limits_hold_on_every_slot(service: ServiceProcess) -> None:
    users = [uuid.uuid4().hex for _ in range(12)]
    for u in users:
        codes = [service.check("c", [("user", u)]).overall_code for _ in range(4)]
        assert codes == [RLS.OK, RLS.OK, RLS.OK, RLS.OVER_LIMIT], u


def _keys_in_different_slots() -> tuple[str, str]:
    while True:
        a, b = uuid.uuid4().hex, uuid.uuid4().hex
        enc = KeyEncoder()
        # the slot depends on the rule identity too; different random values land apart almost always
        if hash_slot(enc.key(enc.rule_part("c", "x"), (a,))) != hash_slot(enc.key(enc.rule_part("c", "x"), (b,))):
            return a, b


def test_cross_slot_request_is_all_or_nothing(service: ServiceProcess) -> None:
    user, ip = _keys_in_different_slots()
    service.check("c", [("ip", ip)])  # one of two left: a request needing 2 of it is denied by the store
    for _ in range(5):
        r = service.check("c", [("user", user)], descriptor([("ip", ip)], hits=2), [("tb", user)])
        assert r.overall_code == RLS.OVER_LIMIT
        assert r.statuses[0].code == RLS.OK and r.statuses[0].limit_remaining == 3
        assert r.statuses[2].limit_remaining == 5
    # the reservations made in the other slots were refunded
    assert service.check("c", descriptor([("user", user)], hits=0)).statuses[0].limit_remaining == 3
    assert service.check("c", descriptor([("tb", user)], hits=0)).statuses[0].limit_remaining == 5
    ok = service.check("c", [("user", user)], [("tb", user)])
    assert ok.overall_code == RLS.OK and ok.statuses[0].limit_remaining == 2


def test_master_failover_without_restart(service: ServiceProcess, cluster: LocalCluster) -> None:
    """Runs last in this module: it leaves the cluster with a promoted replica."""
    masters = [n for n in cluster.nodes if b"master" in redis.Redis(port=n.port).execute_command("ROLE")[0]]
    masters[0].stop()
    started = time.monotonic()
    answered = 0

    # Every request is answered (failure mode during the failover window), and normal decisions resume:
    # remaining == 2 after one hit is a real store decision (the failure mode reports the full limit).
    def resumed() -> bool:
        nonlocal answered
        r = service.check("c", [("user", uuid.uuid4().hex)])
        answered += 1
        return r.overall_code == RLS.OK and r.statuses[0].limit_remaining == 2

    wait_for(resumed, 30, "decisions after the failover", interval=0.2)
    try:
        wait_for(
            lambda: all(
                service.check("c", [("user", u)]).statuses[0].limit_remaining == 2
                for u in [uuid.uuid4().hex for _ in range(20)]
            ),
            30,
            "every slot to answer",
        )
    except TimeoutError as err:  # say whether the cluster failed over or the service did not follow it
        alive = next(n for n in cluster.nodes if n.proc is not None and n is not masters[0])
        nodes = redis.Redis(port=alive.port).execute_command("CLUSTER", "NODES")
        raise AssertionError(f"{err}\nCLUSTER NODES:\n{nodes}\nservice log:\n{service.log_text()[-3000:]}") from err
    assert answered >= 1 and time.monotonic() - started < 30


def test_rlqs_shares_and_charges_on_every_slot(service: ServiceProcess) -> None:
    """RLQS on the cluster: each bucket's share hash sits in its counter's slot (one script call per report), what
    Envoy allowed is charged to the counter the RLS path reads, and a spent hourly limit is DENY_ALL."""
    from envoy.type.v3 import ratelimit_strategy_pb2

    from tests.integration.test_rlqs import FakeEnvoy

    envoy = FakeEnvoy(service, "envoy-c", domain="c")
    try:
        users = [uuid.uuid4().hex for _ in range(8)]
        for u in users:
            action = envoy.report({"user": u}, 2).bucket_action[0].quota_assignment_action
            assert action.rate_limit_strategy.HasField("token_bucket"), u
            codes = [service.check("c", [("user", u)]).overall_code for _ in range(2)]
            assert codes == [RLS.OK, RLS.OVER_LIMIT], u  # 2 of 3 charged by the report
            spent = envoy.report({"user": u}, 0).bucket_action[0].quota_assignment_action
            assert spent.rate_limit_strategy.blanket_rule == ratelimit_strategy_pb2.RateLimitStrategy.DENY_ALL, u
    finally:
        envoy.close()
