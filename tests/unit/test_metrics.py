"""Metrics counted in plain integers reach Prometheus on flush, with the numbers direct increments give."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from ratelimitd.config.rules import Rule
from ratelimitd.config.units import Unit
from ratelimitd.metrics import Metrics


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_pending_histogram_flushes_what_direct_observations_give() -> None:
    metrics = Metrics()
    bounds = metrics.request_latency._upper_bounds
    reference_registry = CollectorRegistry()
    reference = Histogram("ref", "reference", ("api",), buckets=bounds[:-1], registry=reference_registry)
    pending = metrics.histogram(metrics.request_latency, "envoy")
    assert pending is metrics.histogram(metrics.request_latency, "envoy")  # one per labels
    values = [0.0, 0.0001, 0.0002, 0.0003, 0.004, 0.004, 0.7, 3.0]  # 0.0002: exactly on a bound
    for v in values:
        pending.observe(v)
        reference.labels("envoy").observe(v)
    name = "ratelimitd_request_seconds"
    assert sample(metrics.registry, f"{name}_count", api="envoy") == 0  # not before the flush
    metrics.flush()
    metrics.flush()  # a second flush adds nothing
    for bound in [*(str(b) for b in bounds[:-1]), "+Inf"]:
        got = sample(metrics.registry, f"{name}_bucket", api="envoy", le=bound)
        assert got == sample(reference_registry, "ref_bucket", api="envoy", le=bound), bound
    assert sample(metrics.registry, f"{name}_count", api="envoy") == len(values)
    assert sample(metrics.registry, f"{name}_sum", api="envoy") == sample(reference_registry, "ref_sum", api="envoy")


def test_rule_counters_flush_per_outcome() -> None:
    metrics = Metrics(near_limit_ratio=0.8)
    rule = Rule("d", "user", "ident", 10, Unit.SECOND)
    shadow = Rule("d", "shadow", "ident2", 10, Unit.SECOND, shadow_mode=True)
    metrics.record(rule, ("a",), 1, True, 9)  # within
    metrics.record(rule, ("a",), 2, True, 1)  # near: 1 < 10 * 0.2
    metrics.record(rule, ("a",), 3, False, 0)  # over
    metrics.record(rule, ("a",), 1, False, 0, from_cache=True)
    metrics.record(shadow, ("a",), 4, False, 0)
    name = "ratelimit_service_rate_limit_{}_total"
    assert sample(metrics.registry, name.format("total_hits"), domain="d", key="user") == 0
    text = generate_latest(metrics.exposition_registry()).decode()  # the exposition flushes first
    assert 'ratelimit_service_rate_limit_total_hits_total{domain="d",key="user"} 7.0' in text
    expected = {"within_limit": 1, "near_limit": 2, "over_limit": 4, "over_limit_with_local_cache": 1}
    for stat, n in expected.items():
        assert sample(metrics.registry, name.format(stat), domain="d", key="user") == n, stat
    assert sample(metrics.registry, name.format("shadow_mode"), domain="d", key="shadow") == 4
    assert sample(metrics.registry, name.format("over_limit"), domain="d", key="shadow") == 0
    metrics.record(rule, ("a",), 5, True, 9)
    metrics.flush()
    assert sample(metrics.registry, name.format("total_hits"), domain="d", key="user") == 12
