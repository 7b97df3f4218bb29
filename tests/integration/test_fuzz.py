"""Malformed input never crashes the service nor leaks a trace: hypothesis-built requests and raw bytes."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.service.ratelimit.v3 import rls_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from ratelimitd.store.embedded import EmbeddedRedis
from tests.conftest import DEEP
from tests.service import RLS, ServiceProcess, descriptor

pytestmark = pytest.mark.slow
METHOD = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
ALLOWED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}  # never INTERNAL or UNKNOWN


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, default_redis: EmbeddedRedis) -> Iterator[ServiceProcess]:
    d: Path = tmp_path_factory.mktemp("fuzz")
    (d / "f.yaml").write_text(
        "domain: f\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1000}\n"
        "  - key: '*'\n    value: '*'\n    rate_limit: {unit: second, requests_per_unit: 5}\n"
    )
    with ServiceProcess(d, default_redis.url, "--max-message-bytes", "65536").start() as svc:
        yield svc
        assert svc.proc is not None and svc.proc.poll() is None, "the service died"
        assert "Traceback" not in svc.log_text()


def still_serving(svc: ServiceProcess) -> None:
    assert svc.check("f", [("k", "alive")]).overall_code in (RLS.OK, RLS.OVER_LIMIT)


text = st.text(max_size=300)
entries = st.lists(st.tuples(text, text), max_size=20)
descs = st.lists(
    st.tuples(
        entries,
        st.one_of(st.none(), st.integers(0, 2**64 - 1)),
        st.one_of(st.none(), st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 7))),
    ),
    max_size=70,
)


@settings(max_examples=100_000 if DEEP else 150)
@given(domain=st.one_of(text, st.just("f")), ds=descs, hits=st.integers(0, 2**32 - 1))
def test_generated_requests(service: ServiceProcess, domain: str, ds, hits: int) -> None:  # type: ignore[no-untyped-def]
    req = rls_pb2.RateLimitRequest(domain=domain, hits_addend=hits)
    for es, addend, limit in ds:
        req.descriptors.append(descriptor(es, hits=addend, limit=limit))
    try:
        service.stub().ShouldRateLimit(req, timeout=5)
    except grpc.RpcError as err:
        assert err.code() in ALLOWED, (err.code(), err.details())
        assert "Traceback" not in (err.details() or "") and 'File "' not in (err.details() or "")


def test_raw_malformed_bytes(service: ServiceProcess) -> None:
    assert service.channel is not None
    call = service.channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
    rng = random.Random(int(os.environ.get("FUZZ_SEED", "7")))
    valid = rls_pb2.RateLimitRequest(domain="f", descriptors=[descriptor([("k", "v")])]).SerializeToString()
    cases = 100_000 if DEEP else 2_000
    for i in range(cases):
        if i % 3 == 0:  # mutate a valid message
            data = bytearray(valid)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            payload = bytes(data)
        else:
            payload = rng.randbytes(rng.randint(0, 200))
        try:
            call(payload, timeout=5)
        except grpc.RpcError as err:
            assert err.code() in ALLOWED, (err.code(), err.details())
            assert "Traceback" not in (err.details() or "")
        if i % 500 == 0:
            still_serving(service)
    with pytest.raises(grpc.RpcError) as too_big:
        call(b"\x0a" + b"\xff" * 10 + b"x" * 70_000, timeout=5)  # over the message cap
    assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    still_serving(service)
