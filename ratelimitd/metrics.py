"""Prometheus metrics. Every metric envoyproxy/ratelimit also exports has exactly the name and labels its
Prometheus output uses (its default statsd mapping: `ratelimit_service_rate_limit_<stat>{domain, key1, key2}`,
counters without a `_total` suffix), so existing dashboards and alerts work unchanged;
`tests/unit/test_metrics.py` holds the list. Only config-defined names become labels unless a rule says
`detailed_metric: true`: callers cannot grow the label space.

The per-request metrics are counted in plain integers and added to the Prometheus values by `flush()`
(the server calls it every `FLUSH_SECONDS` and before answering /metrics): in multiprocess mode every
Prometheus increment takes a lock and writes a memory-mapped file, which cost ~15 us per request (measured),
3-4% of a worker's CPU per check. A scrape may so see another worker's counts up to `FLUSH_SECONDS` late."""

from __future__ import annotations

import asyncio
import hashlib
import os
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Metric, multiprocess
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from ratelimitd.config.rules import Rule

FLUSH_SECONDS = 1.0
MAX_DENIED_VALUES = 1000
RULE_STATS = ("total_hits", "over_limit", "near_limit", "within_limit", "shadow_mode", "over_limit_with_local_cache")
RESPONSE_TIME = "ratelimit_service_response_time_seconds"
TOTAL_REQUESTS = "ratelimit_service_total_requests"
# Counters exported without prometheus_client's `_total`, as envoyproxy/ratelimit's Prometheus sink names them.
# (over_limit_with_local_cache has no mapping there; it is named like its siblings.)
ENVOY_RATELIMIT_COUNTERS = frozenset(
    {
        *(f"ratelimit_service_rate_limit_{stat}" for stat in RULE_STATS),
        "ratelimit_service_config_load_success",
        "ratelimit_service_config_load_error",
        "ratelimit_service_should_rate_limit_error",
        TOTAL_REQUESTS,
    }
)
_LAT_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


@dataclass(slots=True)
class RuleCounters:
    """One rule's counters, and what was counted since the last flush."""

    children: tuple[Counter, ...]  # total_hits, over_limit, near_limit, within_limit, shadow, local cache
    total_hits: int = 0
    over_limit: int = 0
    near_limit: int = 0
    within_limit: int = 0
    shadow_mode: int = 0
    over_limit_with_local_cache: int = 0

    def flush(self) -> None:
        pending = (
            self.total_hits,
            self.over_limit,
            self.near_limit,
            self.within_limit,
            self.shadow_mode,
            self.over_limit_with_local_cache,
        )
        for child, n in zip(self.children, pending, strict=True):
            if n:
                child.inc(n)
        self.total_hits = self.over_limit = self.near_limit = self.within_limit = 0
        self.shadow_mode = self.over_limit_with_local_cache = 0


@dataclass(slots=True)
class PendingHistogram:
    """Observations of one histogram kept as bucket counts until the flush adds them in one step each.

    prometheus_client has no public call to add several observations at once; this uses its histogram's
    `_upper_bounds`, `_buckets` and `_sum` (unchanged since 2015; tests/unit/test_metrics.py fails if they go)."""

    histogram: Histogram
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.histogram._upper_bounds)

    def observe(self, value: float) -> None:
        self.total += value
        self.counts[bisect_left(self.histogram._upper_bounds, value)] += 1

    def flush(self) -> None:
        if not any(self.counts):
            return
        for bucket, n in zip(self.histogram._buckets, self.counts, strict=True):
            if n:
                bucket.inc(n)
        self.histogram._sum.inc(self.total)
        self.counts = [0] * len(self.counts)
        self.total = 0.0


class Metrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, near_limit_ratio: float = 0.8, hash_values: bool = False
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.near_limit_ratio = near_limit_ratio
        self.hash_values = hash_values
        # For the console's fleet view (engine/fleet_stats.py), taken once a second: per rule (domain, stats key)
        # [allowed, over limit, near limit, shadow-denied] hits, and the values denied (bounded per rule).
        self._fleet: dict[int, list[Any]] = {}  # by id(rule): [rule, allowed, over, near, shadow] (rule kept alive)
        self._denied: dict[tuple[str, str], dict[str, int]] = {}
        r = self.registry
        # key1 and key2 as envoyproxy/ratelimit's mapping fills them (the first two levels of the stats key; empty
        # means absent), and key: the whole stats key, so deeper levels stay apart.
        labels = ("domain", "key1", "key2", "key")

        def rule_counter(stat: str, doc: str) -> Counter:
            return Counter(f"ratelimit_service_rate_limit_{stat}", doc, labels, registry=r)

        self._rule = [  # in RULE_STATS order
            rule_counter("total_hits", "hits (cost) checked against a rule"),
            rule_counter("over_limit", "hits denied by a rule"),
            rule_counter("near_limit", "hits admitted with less than (1 - near-limit ratio) of the limit left"),
            rule_counter("within_limit", "hits admitted with room to spare"),
            rule_counter("shadow_mode", "hits a shadow-mode rule would have denied"),
            rule_counter("over_limit_with_local_cache", "hits denied from the local over-limit cache"),
        ]
        self.domain_not_found = Counter(
            "ratelimit_service_domain_not_found", "requests for an unknown domain", registry=r
        )
        self.request_latency = Histogram(
            RESPONSE_TIME,
            "time to answer a check, by method (ShouldRateLimit, Check, http)",
            ("grpc_method",),
            buckets=_LAT_BUCKETS,
            registry=r,
        )
        self.store_latency = Histogram(
            "ratelimitd_store_call_seconds", "time of one store script call", buckets=_LAT_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "ratelimitd_store_batch_requests",
            "requests carried by one store call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.store_errors = Counter("ratelimitd_store_errors", "store calls that failed or timed out", registry=r)
        self.failure_mode = Counter(
            "ratelimitd_failure_mode_decisions", "requests answered by the failure mode", ("mode",), registry=r
        )
        self.config_load_success = Counter(
            "ratelimit_service_config_load_success", "config loads that applied", registry=r
        )
        self.config_load_errors = Counter(
            "ratelimit_service_config_load_error", "config loads rejected (old config kept)", registry=r
        )
        self.should_rate_limit_error = Counter(
            "ratelimit_service_should_rate_limit_error",
            "checks answered by the failure mode because the store failed (redis_error) or that failed inside the "
            "service (service_error)",
            ("err_type",),
            registry=r,
        )
        self.invalid_requests = Counter(
            "ratelimitd_invalid_requests", "requests rejected as malformed", ("api",), registry=r
        )
        self.worker_restarts = Counter(
            "ratelimitd_worker_restarts", "workers started again after one died unexpectedly", registry=r
        )
        self.admin_denied = Counter("ratelimitd_admin_unauthenticated", "admin calls without a valid token", registry=r)
        self.rlqs_streams = Counter("ratelimitd_rlqs_streams", "RLQS streams opened by Envoys", registry=r)
        self.rlqs_reports = Counter("ratelimitd_rlqs_reports", "RLQS usage reports received", registry=r)
        self.rlqs_assignments = Counter("ratelimitd_rlqs_assignments", "RLQS bucket assignments pushed", registry=r)
        self.rlqs_buckets_refused = Counter(
            "ratelimitd_rlqs_buckets_refused",
            "new RLQS buckets given no assignment: over the per-stream or the per-process cap",
            ("cap",),
            registry=r,
        )
        self.rlqs_open_streams = Gauge(
            "ratelimitd_rlqs_open_streams", "RLQS streams open now", registry=r, multiprocess_mode="livesum"
        )
        self.rlqs_buckets = Gauge(
            "ratelimitd_rlqs_buckets", "RLQS buckets held by open streams", registry=r, multiprocess_mode="livesum"
        )
        self.rlqs_abandoned = Counter("ratelimitd_rlqs_abandoned", "idle RLQS buckets abandoned", registry=r)
        self.rlqs_requests = Counter(
            "ratelimitd_rlqs_requests",
            "requests Envoys reported over RLQS, per rule, as they enforced them (allowed or denied)",
            ("domain", "key", "verdict"),
            registry=r,
        )
        self.stored_limits_lost = Gauge(
            "ratelimitd_stored_limits_lost",
            "1 while the store has lost limits that this instance still enforces from its last applied copy",
            registry=r,
            multiprocess_mode="max",
        )
        self.stored_limits_generation = Gauge(
            "ratelimitd_stored_limits_generation",
            "generation of the stored limits this instance applied",
            registry=r,
            multiprocess_mode="max",
        )
        self.stored_limits_changes = Counter(
            "ratelimitd_stored_limits_changes",
            "changes to stored limits made through this instance",
            ("action",),
            registry=r,
        )
        self._children: dict[tuple[str, str], RuleCounters] = {}
        self._pending: dict[tuple[Histogram, tuple[str, ...]], PendingHistogram] = {}

    def count_config_load(self, applied: bool) -> None:
        (self.config_load_success if applied else self.config_load_errors).inc()

    def histogram(self, histogram: Histogram, *labels: str) -> PendingHistogram:
        """A histogram (child) whose observations wait for the next flush."""
        key = (histogram, labels)
        found = self._pending.get(key)
        if found is None:
            found = self._pending[key] = PendingHistogram(histogram.labels(*labels) if labels else histogram)
        return found

    async def flush_every(self, seconds: float = FLUSH_SECONDS) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.flush()

    def flush(self) -> None:
        """Add what was counted since the last flush to the Prometheus values."""
        for rule in self._children.values():
            rule.flush()
        for pending in self._pending.values():
            pending.flush()

    def exposition_registry(self) -> CollectorRegistry:
        """What /metrics shows: this registry, or the sum over all workers in multiprocess mode, under
        envoyproxy/ratelimit's names."""
        self.flush()
        source: Collector = self.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            source = CollectorRegistry()
            multiprocess.MultiProcessCollector(source)  # type: ignore[no-untyped-call]
        shown = CollectorRegistry(auto_describe=False)
        shown.register(EnvoyRatelimitNames(source))
        return shown

    def rule(self, rule: Rule, values: tuple[str, ...] = ()) -> RuleCounters:
        """Counters of one rule; with detailed_metric, of one rule and descriptor values."""
        parts = stats_parts(rule, values)
        key = ".".join(parts)
        found = self._children.get((rule.domain, key))
        if found is None:
            labels = (rule.domain, parts[0], parts[1] if len(parts) > 1 else "", key)
            found = RuleCounters(tuple(c.labels(*labels) for c in self._rule))
            self._children[(rule.domain, key)] = found
        return found

    def record(
        self, rule: Rule, values: tuple[str, ...], cost: int, admitted: bool, remaining: int, from_cache: bool = False
    ) -> None:
        c = self.rule(rule, values)
        c.total_hits += cost
        fleet = self._fleet.get(id(rule))
        if fleet is None:
            fleet = self._fleet[id(rule)] = [rule, 0, 0, 0, 0]
        if rule.shadow_mode and not admitted:
            c.shadow_mode += cost
            fleet[4] += cost
        elif not admitted:
            c.over_limit += cost
            fleet[2] += cost
            self._count_denied((rule.domain, rule.stats_key), values, cost)
            if from_cache:
                c.over_limit_with_local_cache += cost
        elif remaining < rule.requests_per_unit * (1 - self.near_limit_ratio):
            c.near_limit += cost
            fleet[1] += cost
            fleet[3] += cost
        else:
            c.within_limit += cost
            fleet[1] += cost

    def record_reported(self, rule: Rule, values: tuple[str, ...], allowed: int, denied: int) -> None:
        """What an Envoy reported over RLQS for one rule: per-rule counters, and the console's fleet view (as
        allowed and over-limit hits, so RLQS traffic shows beside the RLS path's)."""
        for verdict, n in (("allowed", allowed), ("denied", denied)):
            if n:
                self.rlqs_requests.labels(rule.domain, rule.stats_key, verdict).inc(n)
        fleet = self._fleet.get(id(rule))
        if fleet is None:
            fleet = self._fleet[id(rule)] = [rule, 0, 0, 0, 0]
        fleet[1] += allowed
        fleet[2] += denied
        if denied:
            self._count_denied((rule.domain, rule.stats_key), values, denied)

    def _count_denied(self, rid: tuple[str, str], values: tuple[str, ...], cost: int) -> None:
        """Denied hits by descriptor values (a digest of them with --hash-values), at most MAX_DENIED_VALUES
        distinct values per rule per second; the rest count as one entry."""
        text = " | ".join(values)
        if self.hash_values:
            text = "sha256:" + hashlib.sha256("\x1f".join(values).encode()).hexdigest()[:16]
        per_rule = self._denied.get(rid)
        if per_rule is None:
            per_rule = self._denied[rid] = {}
        if text not in per_rule and len(per_rule) >= MAX_DENIED_VALUES:
            text = "(other values)"
        per_rule[text] = per_rule.get(text, 0) + cost

    def take_fleet(self) -> tuple[dict[tuple[str, str], list[int]], dict[tuple[str, str], dict[str, int]]]:
        """What was counted for the fleet view since the last call; starts again from zero."""
        counts: dict[tuple[str, str], list[int]] = {}
        for rule, *numbers in self._fleet.values():
            total = counts.setdefault((rule.domain, rule.stats_key), [0, 0, 0, 0])
            for i, n in enumerate(numbers):
                total[i] += n
        denied = self._denied
        self._fleet, self._denied = {}, {}
        return counts, denied


def stats_parts(rule: Rule, values: tuple[str, ...]) -> tuple[str, ...]:
    """The levels of a rule's stats key as envoyproxy/ratelimit forms them: `key_value` where the config names a
    value, `key` where it does not; with detailed_metric, `key_value` with the request's values at every level."""
    if not rule.path:
        return (rule.stats_key,)
    if rule.detailed_metric and len(values) == len(rule.path):
        return tuple(f"{k}_{v}" for (k, _), v in zip(rule.path, values, strict=True))
    return tuple(f"{k}_{v}" if v else k for k, v in rule.path)


class EnvoyRatelimitNames(Collector):
    """Shows a registry under envoyproxy/ratelimit's names: its counters without prometheus_client's `_total`
    (the text format ties the counter type to that suffix, so they are untyped here; PromQL treats them
    alike), empty labels left out as its output leaves them, and `ratelimit_service_total_requests` read off
    the response-time histogram's counts (nothing more is counted per request)."""

    def __init__(self, source: Collector) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        for family in self.source.collect():
            if family.name in ENVOY_RATELIMIT_COUNTERS:
                yield _untyped(family.name, family.documentation, family.samples, family.name + "_total")
            else:
                yield family
            if family.name == RESPONSE_TIME:
                yield _untyped(TOTAL_REQUESTS, "checks answered, by method", family.samples, RESPONSE_TIME + "_count")


def _untyped(name: str, doc: str, samples: Iterable[Sample], source: str) -> Metric:
    """The samples named `source` as an untyped family `name`."""
    out = Metric(name, doc, "unknown")
    for sample in samples:
        if sample.name == source:
            out.add_sample(name, {k: v for k, v in sample.labels.items() if v}, sample.value)
    return out
