"""What every gRPC face does around the engine: refuse malformed input, time the call, map errors to
status codes without leaking a trace, and log with the caller's request id."""

from __future__ import annotations

import logging
import time
from typing import NoReturn

import grpc

from ratelimitd.api.grpc_util import Malformed
from ratelimitd.engine.decision import Decision
from ratelimitd.engine.engine import Engine
from ratelimitd.engine.request import InvalidRequest, Request
from ratelimitd.logs import request_id

log = logging.getLogger(__name__)


async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)  # raises; grpc has no type hints to say so
    raise AssertionError("context.abort returned")


class GrpcFace:
    def __init__(self, engine: Engine, api: str, method: str) -> None:
        self.engine = engine
        self.api = api
        self._latency = engine.metrics.histogram(engine.metrics.request_latency, method)
        self._invalid = engine.metrics.invalid_requests.labels(api)
        self._service_error = engine.metrics.should_rate_limit_error.labels("service_error")

    async def decide(self, req: Request | Malformed, context: grpc.aio.ServicerContext) -> Decision:
        """`req` comes decoded from the method's deserializer (`grpc_util.request_deserializer`)."""
        started = time.perf_counter()
        if isinstance(req, Malformed):
            self._invalid.inc()
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, req.reason)
        try:
            decision = await self.engine.check(req)
        except InvalidRequest as err:
            self._invalid.inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except Exception:
            self._service_error.inc()
            log.exception(
                "unexpected error while deciding",
                extra={"api": self.api, "request_id": request_id(context.invocation_metadata())},
            )
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        self._latency.observe(time.perf_counter() - started)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "decided",
                extra={
                    "api": self.api,
                    "domain": req.domain,
                    "code": decision.code.name,
                    "request_id": request_id(context.invocation_metadata()),
                },
            )
        return decision
