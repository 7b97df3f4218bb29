"""The admin API on gRPC (`ratelimitd.v1.Admin`) and HTTP (`/v1/admin/...`), behind a bearer token.

Every call needs `authorization: Bearer <token>`; one without it gets UNAUTHENTICATED / 401 and is logged."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ratelimitd.api.domains_admin import STATUS, DomainRpcs
from ratelimitd.api.http import status_json
from ratelimitd.api.native import decode_descriptor, encode_status
from ratelimitd.engine.admin import AdminOps, describe_rule
from ratelimitd.engine.request import Descriptor, InvalidRequest
from ratelimitd.engine.stored_limits import LimitsError
from ratelimitd.metrics import Metrics
from ratelimitd.store.interface import StoreUnavailable
from ratelimitd.v1 import ratelimitd_pb2 as pb
from ratelimitd.v1 import ratelimitd_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


class TokenCheck:
    """Admin tokens by name (the name is who the history and the audit log record)."""

    def __init__(self, tokens: dict[str, str] | None, metrics: Metrics) -> None:
        self._expected = {name: f"Bearer {token}".encode() for name, token in (tokens or {}).items()}
        self._metrics = metrics

    def ok(self, presented: str | None, who: str) -> str | None:
        """The name of the token presented, or None (refused, counted and logged)."""
        if not self._expected:
            return "admin-listener"  # admin served only on a private --admin-listen without a token
        given = (presented or "").encode()
        found = None
        for name, expected in self._expected.items():  # compare with every token: no early exit to time
            if hmac.compare_digest(given, expected):
                found = name
        if found is None:
            self._metrics.admin_denied.inc()
            log.warning("admin call without a valid token from %s", who)
        return found


class AdminService(pb_grpc.AdminServicer):  # type: ignore[misc]
    def __init__(self, ops: AdminOps, tokens: TokenCheck, domains: DomainRpcs | None = None) -> None:
        self.ops = ops
        self.tokens = tokens
        self.domains = domains

    async def _guard(self, context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[Any]]) -> Any:
        return await self._guard_as(context, lambda _who: call())

    async def _guard_as(self, context: grpc.aio.ServicerContext, call: Callable[[str], Awaitable[Any]]) -> Any:
        """Authorize, then run `call(who)` (who: the token's name), mapping refusals to status codes."""
        meta = dict(context.invocation_metadata() or ())
        who = self.tokens.ok(meta.get("authorization"), context.peer())
        if who is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "admin calls need 'authorization: Bearer <token>'")
            return None
        try:
            return await call(who)
        except InvalidRequest as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except LimitsError as err:
            await context.abort(STATUS[err.kind][1], "\n".join(err.problems) if err.kind == "invalid" else str(err))
        except StoreUnavailable:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "store unavailable")

    async def _domains(self, context: grpc.aio.ServicerContext, name: str, request: Any) -> Any:
        if self.domains is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "stored limits are off on this instance")
        method = getattr(self.domains, name)
        return await self._guard_as(context, lambda who: method(request, who))

    async def ListDomains(self, request: pb.ListDomainsRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._domains(context, "list", request)

    async def GetDomain(self, request: pb.GetDomainRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._domains(context, "get", request)

    async def PutDomain(self, request: pb.PutDomainRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._domains(context, "put", request)

    async def DeleteDomain(self, request: pb.PutDomainRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._domains(context, "delete", request)

    async def DomainHistory(self, request: pb.GetDomainRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._domains(context, "history", request)

    async def RollbackDomain(self, request: pb.RollbackDomainRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._domains(context, "rollback", request)

    async def RestoreDomains(self, request: pb.RestoreDomainsRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._domains(context, "restore", request)

    async def GetUsage(self, request: pb.UsageRequest, context: grpc.aio.ServicerContext) -> pb.UsageResponse:
        async def call() -> pb.UsageResponse:
            status, key = await self.ops.usage(request.domain, decode_descriptor(request.descriptor))
            return pb.UsageResponse(state=encode_status(status), redis_key=key)

        return await self._guard(context, call)

    async def Reset(self, request: pb.ResetRequest, context: grpc.aio.ServicerContext) -> pb.ResetResponse:
        async def call() -> pb.ResetResponse:
            return pb.ResetResponse(existed=await self.ops.reset(request.domain, decode_descriptor(request.descriptor)))

        return await self._guard(context, call)

    async def AdjustQuota(
        self, request: pb.AdjustQuotaRequest, context: grpc.aio.ServicerContext
    ) -> pb.AdjustQuotaResponse:
        async def call() -> pb.AdjustQuotaResponse:
            d = decode_descriptor(request.descriptor)
            status = await self.ops.adjust_quota(request.domain, d, request.delta)
            return pb.AdjustQuotaResponse(state=encode_status(status))

        return await self._guard(context, call)

    async def ListConfig(
        self, request: pb.ListConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListConfigResponse:
        async def call() -> pb.ListConfigResponse:
            return pb.ListConfigResponse(rules=self.ops.list_config())

        return await self._guard(context, call)


class _AdminBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    domain: str
    entries: list[dict[str, str]] = Field(description="[{key, value}, ...]")
    delta: int = 0

    def descriptor(self) -> Descriptor:
        try:
            return Descriptor(tuple((e["key"], e["value"]) for e in self.entries))
        except KeyError as err:
            raise InvalidRequest(f"entries need 'key' and 'value' (missing {err})") from None


def add_admin_routes(app: web.Application, ops: AdminOps, tokens: TokenCheck) -> None:
    def handler(
        action: Callable[[_AdminBody], Awaitable[dict[str, Any]]],
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            if not tokens.ok(request.headers.get("Authorization"), str(request.remote)):
                return web.json_response({"error": "admin calls need 'Authorization: Bearer <token>'"}, status=401)
            try:
                body = _AdminBody.model_validate_json(await request.read())
                return web.json_response(await action(body))
            except ValidationError as err:
                return web.json_response({"error": str(err.errors()[0]["msg"])}, status=400)
            except InvalidRequest as err:
                return web.json_response({"error": str(err)}, status=400)
            except StoreUnavailable:
                return web.json_response({"error": "store unavailable"}, status=503)

        return handle

    async def usage(b: _AdminBody) -> dict[str, Any]:
        status, key = await ops.usage(b.domain, b.descriptor())
        described = describe_rule(status.rule) if status.rule is not None else None
        return {"state": status_json(status), "redis_key": key, "description": described}

    async def reset(b: _AdminBody) -> dict[str, Any]:
        return {"existed": await ops.reset(b.domain, b.descriptor())}

    async def adjust(b: _AdminBody) -> dict[str, Any]:
        return {"state": status_json(await ops.adjust_quota(b.domain, b.descriptor(), b.delta))}

    async def config(request: web.Request) -> web.Response:
        if not tokens.ok(request.headers.get("Authorization"), str(request.remote)):
            return web.json_response({"error": "admin calls need 'Authorization: Bearer <token>'"}, status=401)
        return web.json_response({"rules": ops.list_config()})

    app.router.add_post("/v1/admin/usage", handler(usage))
    app.router.add_post("/v1/admin/reset", handler(reset))
    app.router.add_post("/v1/admin/adjust-quota", handler(adjust))
    app.router.add_get("/v1/admin/config", config)
