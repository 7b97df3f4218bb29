"""Envoy's `envoy.service.ratelimit.v3.RateLimitService`, encoded with xds-protos' generated code."""

from __future__ import annotations

from functools import lru_cache

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from ratelimitd.api.grpc_face import GrpcFace
from ratelimitd.api.grpc_util import Malformed
from ratelimitd.config.units import Unit
from ratelimitd.engine.decision import Decision, ceil_div
from ratelimitd.engine.engine import Engine
from ratelimitd.engine.request import Descriptor, InvalidRequest, LimitOverride, Request

SERVICE_NAME = "envoy.service.ratelimit.v3.RateLimitService"
# trailing metadata "<store time us>:<position in the store call>", with --expose-store-time
STORE_ORDER_METADATA = "ratelimitd-store-order"


def decode(msg: rls_pb2.RateLimitRequest) -> Request:
    descriptors = []
    for i, d in enumerate(msg.descriptors):
        override = None
        if d.HasField("limit"):
            try:
                unit = Unit(d.limit.unit)
            except ValueError:
                raise InvalidRequest(f"descriptors[{i}].limit.unit must be set to a known unit") from None
            override = LimitOverride(d.limit.requests_per_unit, unit)
        descriptors.append(
            Descriptor(
                tuple((e.key, e.value) for e in d.entries),
                d.hits_addend.value if d.HasField("hits_addend") else None,
                override,
            )
        )
    return Request(msg.domain, tuple(descriptors), msg.hits_addend)


@lru_cache(maxsize=4096)
def _current_limit(requests_per_unit: int, unit: Unit, name: str | None) -> rls_pb2.RateLimitResponse.RateLimit:
    """A rule's `current_limit`, built once: passing it to `add()` copies it into each response."""
    return rls_pb2.RateLimitResponse.RateLimit(requests_per_unit=requests_per_unit, unit=int(unit), name=name or "")


def headers(decision: Decision) -> list[base_pb2.HeaderValue]:
    """`RateLimit-Limit/-Remaining/-Reset` for the status closest to its limit, as envoyproxy/ratelimit sends
    them with its response headers on (`--response-headers`)."""
    chosen = decision.closest_to_limit()
    if chosen is None or chosen.rule is None:
        return []
    return [
        base_pb2.HeaderValue(key="RateLimit-Limit", value=str(chosen.rule.requests_per_unit)),
        base_pb2.HeaderValue(key="RateLimit-Remaining", value=str(chosen.remaining)),
        base_pb2.HeaderValue(key="RateLimit-Reset", value=str(ceil_div(chosen.reset_after_us, 1_000_000))),
    ]


def encode(decision: Decision, with_headers: bool = False) -> rls_pb2.RateLimitResponse:
    # duration_until_reset is whole seconds rounded up, like envoyproxy/ratelimit: Envoy's headers print seconds.
    resp = rls_pb2.RateLimitResponse(overall_code=int(decision.code))
    add = resp.statuses.add
    for s in decision.statuses:
        # set field by field: ~30% cheaper than keyword arguments (upb, measured)
        status = add()
        status.code = int(s.code)
        status.limit_remaining = s.remaining
        if s.rule is not None:
            status.current_limit.CopyFrom(_current_limit(s.rule.requests_per_unit, s.rule.unit, s.rule.name))
            status.duration_until_reset.seconds = ceil_div(s.reset_after_us, 1_000_000)
    if with_headers:
        resp.response_headers_to_add.extend(headers(decision))
    return resp


class EnvoyRateLimitService(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    def __init__(self, engine: Engine, expose_store_time: bool = False, response_headers: bool = False) -> None:
        self.face = GrpcFace(engine, "envoy", "ShouldRateLimit")
        self.expose_store_time = expose_store_time
        self.response_headers = response_headers

    async def ShouldRateLimit(
        self, request: Request | Malformed, context: grpc.aio.ServicerContext
    ) -> rls_pb2.RateLimitResponse:
        decision = await self.face.decide(request, context)
        if self.expose_store_time:
            now_us, seq = decision.store_order
            context.set_trailing_metadata(((STORE_ORDER_METADATA, f"{now_us}:{seq}"),))
        return encode(decision, self.response_headers)
