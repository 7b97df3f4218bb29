"""A small client for services that ask ratelimitd directly (native gRPC API), sync and async.

from ratelimitd.client import Client
limiter = Client("127.0.0.1:8081")
result = limiter.check("api", {"api_key": key}, cost=1)
if not result.allowed:
    reply_429(retry_after=result.retry_after)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc

from ratelimitd.v1 import ratelimitd_pb2 as pb
from ratelimitd.v1 import ratelimitd_pb2_grpc as pb_grpc

Descriptors = Mapping[str, str] | Sequence[Mapping[str, str]]


def _request(domain: str, descriptors: Descriptors, cost: int, dry_run: bool) -> pb.CheckRequest:
    """One mapping is one descriptor (its items in order); a list of mappings is several."""
    items = [descriptors] if isinstance(descriptors, Mapping) else list(descriptors)
    req = pb.CheckRequest(domain=domain, cost=cost, dry_run=dry_run)
    for d in items:
        req.descriptors.append(pb.Descriptor(entries=[pb.Entry(key=k, value=v) for k, v in d.items()]))
    return req


@dataclass(frozen=True, slots=True)
class Result:
    allowed: bool
    retry_after: float | None  # seconds until the same request would pass; None when allowed or never
    response: pb.CheckResponse

    @property
    def decisions(self) -> list[pb.DescriptorDecision]:
        return list(self.response.decisions)


def _result(resp: pb.CheckResponse) -> Result:
    allowed = resp.overall_code == pb.OK
    retry = resp.retry_after.ToMicroseconds() / 1e6 if resp.HasField("retry_after") else None
    return Result(allowed, retry, resp)


class Client:
    def __init__(
        self, target: str = "127.0.0.1:8081", timeout: float = 0.5, credentials: grpc.ChannelCredentials | None = None
    ) -> None:
        self._channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
        self._stub = pb_grpc.RateLimiterStub(self._channel)
        self._timeout = timeout

    def check(self, domain: str, descriptors: Descriptors, cost: int = 1, dry_run: bool = False) -> Result:
        return _result(self._stub.Check(_request(domain, descriptors, cost, dry_run), timeout=self._timeout))

    def close(self) -> None:
        self._channel.close()


class AsyncClient:
    def __init__(
        self, target: str = "127.0.0.1:8081", timeout: float = 0.5, credentials: grpc.ChannelCredentials | None = None
    ) -> None:
        self._channel = (
            grpc.aio.secure_channel(target, credentials) if credentials else grpc.aio.insecure_channel(target)
        )
        self._stub = pb_grpc.RateLimiterStub(self._channel)
        self._timeout = timeout

    async def check(self, domain: str, descriptors: Descriptors, cost: int = 1, dry_run: bool = False) -> Result:
        resp = await self._stub.Check(_request(domain, descriptors, cost, dry_run), timeout=self._timeout)
        return _result(resp)

    async def close(self) -> None:
        await self._channel.close()
