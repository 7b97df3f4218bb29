"""The check methods' deserializer: bytes -> Request or Malformed, remembering small requests by their bytes."""

from __future__ import annotations

from envoy.service.ratelimit.v3 import rls_pb2

from ratelimitd.api import grpc_util
from ratelimitd.api.envoy_rls import decode
from ratelimitd.api.grpc_util import Malformed, request_deserializer
from ratelimitd.engine.request import Request


def wire(domain: str, *values: str, unit: int | None = None) -> bytes:
    msg = rls_pb2.RateLimitRequest(domain=domain)
    for v in values:
        d = msg.descriptors.add()
        d.entries.add(key="k", value=v)
        if unit is not None:
            d.limit.requests_per_unit = 5
            d.limit.unit = unit
    data: bytes = msg.SerializeToString()
    return data


def test_the_same_bytes_give_the_same_request_without_decoding_again() -> None:
    decoded: list[object] = []

    def counting(msg: rls_pb2.RateLimitRequest) -> Request:
        decoded.append(msg)
        return decode(msg)

    de = request_deserializer(rls_pb2.RateLimitRequest, counting)
    first = de(wire("d", "a", "b"))
    assert isinstance(first, Request)
    assert first.domain == "d" and [x.entries for x in first.descriptors] == [(("k", "a"),), (("k", "b"),)]
    assert de(wire("d", "a", "b")) is first
    assert len(decoded) == 1
    assert de(wire("d", "a", "c")) is not first
    assert len(decoded) == 2


def test_corrupt_bytes_and_invalid_fields_become_malformed_with_the_reason() -> None:
    de = request_deserializer(rls_pb2.RateLimitRequest, decode)
    corrupt = de(b"\x0a\xff\xff")
    assert isinstance(corrupt, Malformed) and "envoy.service.ratelimit.v3.RateLimitRequest" in corrupt.reason
    bad_unit = de(wire("d", "a", unit=99))
    assert isinstance(bad_unit, Malformed)
    assert bad_unit.reason == "descriptors[0].limit.unit must be set to a known unit"
    assert isinstance(de(wire("d", "a", unit=99)), Malformed)  # refusals are not remembered as requests


def test_large_requests_are_not_remembered_and_the_cache_is_bounded() -> None:
    de = request_deserializer(rls_pb2.RateLimitRequest, decode)
    big = wire("d", "x" * (grpc_util.REQUEST_CACHE_MAX_BYTES + 10))
    assert de(big) is not de(big)
    small = wire("d", "s")
    kept = de(small)
    for i in range(grpc_util.REQUEST_CACHE_SIZE):
        de(wire("d", f"v{i}"))
    assert de(small) is not kept  # the full cache was dropped whole rather than growing
    assert de(small) == kept


def test_an_empty_message_decodes_to_a_request_the_engine_will_refuse() -> None:
    out = request_deserializer(rls_pb2.RateLimitRequest, decode)(b"")
    assert isinstance(out, Request) and out.domain == "" and out.descriptors == ()
