"""`envoy.service.rate_limit_quota.v3.RateLimitQuotaService/StreamRateLimitQuotas` (RLQS), served next to the RLS.

Envoys are told apart by the `ratelimitd-envoy-id` stream metadata (set it in the filter's
`rlqs_server.google_grpc`/`envoy_grpc` `initial_metadata`), by stream otherwise. Reports are read leniently
(Envoy 1.40 sends `time_elapsed` 0 first) but bounded: at most `MAX_USAGES` buckets per report, 16 entries per
bucket id, 256 bytes per key or value; anything larger ends the stream with INVALID_ARGUMENT. A stream holds at
most `max_per_stream` buckets: a new one beyond that gets no assignment (Envoy's `no_assignment_behavior` applies;
counted), and so does one past `max_total` buckets over all streams of this process (Envoy's ids are
caller-controlled: built from request headers). A bucket reported idle (0/0) for `abandon_after` seconds is
abandoned; a stream's buckets are released when it ends (Envoy re-reports them on its new stream). Between
reports the stream pushes a bucket's assignment again when other Envoys' demand has changed it (checked every
second, for at most `REFRESH_PER_SECOND` buckets per stream: with more, they take turns, so a stream's refresh
costs at most 200 store calls a second and a bucket is re-read at least once per report interval up to 1,000).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import grpc
from envoy.service.rate_limit_quota.v3 import rlqs_pb2, rlqs_pb2_grpc
from envoy.type.v3 import ratelimit_strategy_pb2

from ratelimitd.engine.rlqs import REFRESH_SECONDS, Assignment, RlqsEngine
from ratelimitd.metrics import Metrics
from ratelimitd.store.interface import StoreUnavailable

ENVOY_ID_METADATA = "ratelimitd-envoy-id"
MAX_USAGES = 1000
MAX_TEXT = 256
REFRESH_PER_SECOND = 200  # most buckets one stream re-reads per second between reports (one script call each)
Strategy = ratelimit_strategy_pb2.RateLimitStrategy
Ident = tuple[tuple[str, str], ...]


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


class _Stream:
    """One Envoy's stream: its buckets (id -> bucket map, last time it was busy, last assignment sent)."""

    def __init__(self, envoy: str, domain: str = "") -> None:
        self.envoy = envoy
        self.domain = domain
        self.buckets: dict[Ident, tuple[dict[str, str], float, Assignment | None]] = {}
        self.cursor = 0  # where the next refresh round starts when there are more than it takes
        self.out: asyncio.Queue[rlqs_pb2.RateLimitQuotaResponse | None] = asyncio.Queue()


class RlqsService(rlqs_pb2_grpc.RateLimitQuotaServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        engine: RlqsEngine,
        metrics: Metrics,
        max_per_stream: int = 1000,
        max_total: int = 100_000,
        abandon_after: float = 60.0,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.max_per_stream = max_per_stream
        self.max_total = max_total
        self.abandon_after = abandon_after
        self.held = 0  # buckets held by all open streams of this process

    async def StreamRateLimitQuotas(
        self, requests: AsyncIterator[rlqs_pb2.RateLimitQuotaUsageReports], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rlqs_pb2.RateLimitQuotaResponse]:
        meta = dict(context.invocation_metadata() or ())
        stream = _Stream(str(meta.get(ENVOY_ID_METADATA) or f"stream-{uuid.uuid4().hex}")[:MAX_TEXT])
        self.metrics.rlqs_streams.inc()
        self.metrics.rlqs_open_streams.inc()
        tasks = [asyncio.create_task(self._read(requests, stream)), asyncio.create_task(self._refresh(stream))]
        try:
            while (response := await stream.out.get()) is not None:
                yield response
            for task in tasks:
                if task.done() and task.exception() is not None:
                    err = task.exception()
                    if isinstance(err, _Invalid):
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
                    raise err  # type: ignore[misc]
        finally:
            for task in tasks:
                task.cancel()
            self._release(len(stream.buckets))
            stream.buckets.clear()
            self.metrics.rlqs_open_streams.dec()

    def _release(self, n: int) -> None:
        self.held -= n
        self.metrics.rlqs_buckets.dec(n)

    def _refused(self, stream: _Stream) -> str | None:
        """Which cap a new bucket would break, if any."""
        if len(stream.buckets) >= self.max_per_stream:
            return "stream"
        return "process" if self.held >= self.max_total else None

    async def _read(self, requests: AsyncIterator[rlqs_pb2.RateLimitQuotaUsageReports], stream: _Stream) -> None:
        try:
            async for reports in requests:
                self.metrics.rlqs_reports.inc()
                response = await self._answer(reports, stream)
                if response.bucket_action:
                    stream.out.put_nowait(response)
        finally:
            stream.out.put_nowait(None)

    async def _answer(
        self, reports: rlqs_pb2.RateLimitQuotaUsageReports, stream: _Stream
    ) -> rlqs_pb2.RateLimitQuotaResponse:
        if len(reports.bucket_quota_usages) > MAX_USAGES:
            raise _Invalid(f"more than {MAX_USAGES} buckets in a report")
        stream.domain = reports.domain
        response = rlqs_pb2.RateLimitQuotaResponse()
        now = time.monotonic()
        for usage in reports.bucket_quota_usages:
            bucket = dict(usage.bucket_id.bucket)
            if len(bucket) > 16 or any(len(k) > MAX_TEXT or len(v) > MAX_TEXT for k, v in bucket.items()):
                raise _Invalid("a bucket id has more than 16 entries or a longer key/value")
            ident = tuple(sorted(bucket.items()))
            known = stream.buckets.get(ident)
            if known is None:
                cap = self._refused(stream)
                if cap is not None:
                    self.metrics.rlqs_buckets_refused.labels(cap).inc()
                    continue
                self.held += 1
                self.metrics.rlqs_buckets.inc()
                stream.buckets[ident] = (bucket, now, None)
            seen = usage.num_requests_allowed + usage.num_requests_denied
            last_busy = now if seen or known is None else known[1]
            action = response.bucket_action.add()
            action.bucket_id.CopyFrom(usage.bucket_id)
            if now - last_busy > self.abandon_after:
                action.abandon_action.SetInParent()
                del stream.buckets[ident]
                self._release(1)
                self.metrics.rlqs_abandoned.inc()
                continue
            try:
                assignment = await self.engine.assign(
                    reports.domain, stream.envoy, bucket, usage.num_requests_allowed, usage.num_requests_denied
                )
            except StoreUnavailable:
                response.bucket_action.pop()
                stream.buckets[ident] = (bucket, last_busy, known[2] if known else None)
                continue  # no news: Envoy keeps its assignment until it expires
            stream.buckets[ident] = (bucket, last_busy, assignment)
            action.quota_assignment_action.CopyFrom(encode(assignment))
            self.metrics.rlqs_assignments.inc()
        return response

    async def _refresh(self, stream: _Stream) -> None:
        """Push a bucket's assignment again as soon as other Envoys' demand changes it (see engine/rlqs.py)."""
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            response = rlqs_pb2.RateLimitQuotaResponse()
            idents = list(stream.buckets)
            if len(idents) > REFRESH_PER_SECOND:  # bounded store calls: take the buckets in turns
                stream.cursor %= len(idents)
                idents = (idents[stream.cursor :] + idents[: stream.cursor])[:REFRESH_PER_SECOND]
                stream.cursor += REFRESH_PER_SECOND
            for ident in idents:
                held = stream.buckets.get(ident)
                if held is None or held[2] is None or held[2].kind == "allow_all":
                    continue
                bucket, last_busy, sent = held
                try:
                    now_assigned = await self.engine.refresh(stream.domain, stream.envoy, bucket)
                except StoreUnavailable:
                    continue
                if now_assigned is None or now_assigned == sent or ident not in stream.buckets:
                    continue
                stream.buckets[ident] = (bucket, last_busy, now_assigned)
                action = response.bucket_action.add()
                action.bucket_id.bucket.update(bucket)
                action.quota_assignment_action.CopyFrom(encode(now_assigned))
                self.metrics.rlqs_assignments.inc()
            if response.bucket_action:
                stream.out.put_nowait(response)


class _Invalid(Exception):
    """A report that breaks the input limits: the stream ends with INVALID_ARGUMENT."""
