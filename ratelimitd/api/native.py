"""ratelimitd's own gRPC API (`proto/ratelimitd/v1`): checks with a cost, dry runs and retry-after."""

from __future__ import annotations

import grpc
from google.protobuf import duration_pb2

from ratelimitd.api.grpc_face import GrpcFace
from ratelimitd.api.grpc_util import Malformed
from ratelimitd.engine.decision import Code, Decision, Status
from ratelimitd.engine.engine import Engine
from ratelimitd.engine.request import Descriptor, InvalidRequest, Request
from ratelimitd.v1 import ratelimitd_pb2 as pb
from ratelimitd.v1 import ratelimitd_pb2_grpc as pb_grpc


def decode_descriptor(d: pb.Descriptor) -> Descriptor:
    return Descriptor(tuple((e.key, e.value) for e in d.entries), d.cost if d.HasField("cost") else None)


def decode(msg: pb.CheckRequest) -> Request:
    if msg.cost > 2**32 - 1:
        raise InvalidRequest(f"cost {msg.cost} exceeds {2**32 - 1}")
    return Request(msg.domain, tuple(decode_descriptor(d) for d in msg.descriptors), msg.cost, msg.dry_run)


def _duration(us: int) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMicroseconds(max(us, 0))
    return d


def encode_status(s: Status) -> pb.DescriptorDecision:
    out = pb.DescriptorDecision(code=int(s.code), shadow_denied=s.shadow_denied)
    if s.rule is None:
        return out
    out.limited = True
    out.rule_name = s.rule.name or ""
    out.algorithm = s.rule.algorithm
    out.limit = s.rule.requests_per_unit
    out.remaining = s.remaining
    out.reset_after.CopyFrom(_duration(s.reset_after_us))
    if s.retry_after_us >= 0:
        out.retry_after.CopyFrom(_duration(s.retry_after_us))
    return out


def encode(decision: Decision) -> pb.CheckResponse:
    resp = pb.CheckResponse(
        overall_code=int(decision.code),
        decisions=[encode_status(s) for s in decision.statuses],
        failure_mode=decision.store_failed,
    )
    if decision.code is Code.OVER_LIMIT and decision.retry_after_us >= 0:
        resp.retry_after.CopyFrom(_duration(decision.retry_after_us))
    return resp


class RateLimiterService(pb_grpc.RateLimiterServicer):  # type: ignore[misc]
    def __init__(self, engine: Engine) -> None:
        self.face = GrpcFace(engine, "native", "Check")

    async def Check(self, request: Request | Malformed, context: grpc.aio.ServicerContext) -> pb.CheckResponse:
        return encode(await self.face.decide(request, context))
