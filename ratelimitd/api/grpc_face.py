"""What every gRPC face does around the engine: refuse malformed input, time the call, map errors to
status codes without leaking a trace, and log with the caller's request id."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from ratelimitd.api.grpc_util import Malformed
from ratelimitd.engine.decision import Decision
from ratelimitd.engine.engine import Engine
from ratelimitd.engine.request import InvalidRequest, Request
from ratelimitd.logs import request_id

log = logging.getLogger(__name__)


class GrpcFace:
    def __init__(self, engine: Engine, api: str) -> None:
        self.engine = engine
        self.api = api
        self._latency = engine.metrics.request_latency.labels(api)
        self._invalid = engine.metrics.invalid_requests.labels(api)

    async def decide(
        self, request: Any, context: grpc.aio.ServicerContext, decode: Callable[[Any], Request]
    ) -> Decision:
        started = time.perf_counter()
        if isinstance(request, Malformed):
            self._invalid.inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        try:
            req = decode(request)
            decision = await self.engine.check(req)
        except InvalidRequest as err:
            self._invalid.inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except Exception:
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
