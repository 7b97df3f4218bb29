"""`envoy.service.rate_limit_quota.v3.RateLimitQuotaService/StreamRateLimitQuotas` (RLQS), served next to the RLS.

Envoys are told apart by the `ratelimitd-envoy-id` stream metadata (set it in the filter's
`rlqs_server.google_grpc`/`envoy_grpc` `initial_metadata`), by stream otherwise. Reports are read leniently
(Envoy 1.40 sends `time_elapsed` 0 first) but bounded: at most `MAX_USAGES` buckets per report, 16 entries per
bucket id, 256 bytes per key or value; anything larger ends the stream with INVALID_ARGUMENT. A stream holds at
most `max_buckets` buckets: a new one beyond that gets no assignment (Envoy's `no_assignment_behavior` applies;
counted). A bucket reported idle (0/0) for `abandon_after` seconds is abandoned.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator

import grpc
from envoy.service.rate_limit_quota.v3 import rlqs_pb2, rlqs_pb2_grpc
from envoy.type.v3 import ratelimit_strategy_pb2

from ratelimitd.engine.rlqs import Assignment, RlqsEngine
from ratelimitd.metrics import Metrics
from ratelimitd.store.interface import StoreUnavailable

log = logging.getLogger(__name__)
ENVOY_ID_METADATA = "ratelimitd-envoy-id"
MAX_USAGES = 1000
MAX_TEXT = 256
Strategy = ratelimit_strategy_pb2.RateLimitStrategy


def encode(assignment: Assignment) -> rlqs_pb2.RateLimitQuotaResponse.BucketAction.QuotaAssignmentAction:
    action = rlqs_pb2.RateLimitQuotaResponse.BucketAction.QuotaAssignmentAction()
    action.assignment_time_to_live.seconds = assignment.ttl_seconds
    strategy = action.rate_limit_strategy
    if assignment.kind == "token_bucket":
        strategy.token_bucket.max_tokens = assignment.max_tokens
        strategy.token_bucket.tokens_per_fill.value = assignment.tokens_per_fill
        strategy.token_bucket.fill_interval.seconds = 1
    else:
        strategy.blanket_rule = Strategy.DENY_ALL if assignment.kind == "deny_all" else Strategy.ALLOW_ALL
    return action


class RlqsService(rlqs_pb2_grpc.RateLimitQuotaServiceServicer):  # type: ignore[misc]
    def __init__(self, engine: RlqsEngine, metrics: Metrics, abandon_after: float = 60.0) -> None:
        self.engine = engine
        self.metrics = metrics
        self.abandon_after = abandon_after

    async def StreamRateLimitQuotas(
        self, requests: AsyncIterator[rlqs_pb2.RateLimitQuotaUsageReports], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rlqs_pb2.RateLimitQuotaResponse]:
        meta = dict(context.invocation_metadata() or ())
        envoy = str(meta.get(ENVOY_ID_METADATA) or f"stream-{uuid.uuid4().hex}")[:MAX_TEXT]
        self.metrics.rlqs_streams.inc()
        last_busy: dict[tuple[tuple[str, str], ...], float] = {}  # this stream's buckets
        async for reports in requests:
            self.metrics.rlqs_reports.inc()
            if len(reports.bucket_quota_usages) > MAX_USAGES:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"more than {MAX_USAGES} buckets in a report")
            response = rlqs_pb2.RateLimitQuotaResponse()
            now = time.monotonic()
            for usage in reports.bucket_quota_usages:
                bucket = dict(usage.bucket_id.bucket)
                if len(bucket) > 16 or any(len(k) > MAX_TEXT or len(v) > MAX_TEXT for k, v in bucket.items()):
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT, "a bucket id has more than 16 entries or a longer key/value"
                    )
                ident = tuple(sorted(bucket.items()))
                if ident not in last_busy and len(last_busy) >= self.engine.max_buckets:
                    self.metrics.rlqs_buckets_refused.inc()
                    continue
                seen = usage.num_requests_allowed + usage.num_requests_denied
                if seen or ident not in last_busy:
                    last_busy[ident] = now
                action = response.bucket_action.add()
                action.bucket_id.CopyFrom(usage.bucket_id)
                if now - last_busy[ident] > self.abandon_after:
                    action.abandon_action.SetInParent()
                    del last_busy[ident]
                    continue
                try:
                    assignment = await self.engine.assign(
                        reports.domain, envoy, bucket, usage.num_requests_allowed, usage.num_requests_denied
                    )
                except StoreUnavailable:
                    response.bucket_action.pop()
                    continue  # no news: Envoy keeps its assignment until it expires
                action.quota_assignment_action.CopyFrom(encode(assignment))
                self.metrics.rlqs_assignments.inc()
            if response.bucket_action:
                yield response
