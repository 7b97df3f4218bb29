"""Metrics counted in plain integers reach Prometheus on flush, with the numbers direct increments give."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ratelimitd.config.rules import Rule
from ratelimitd.config.units import Unit
from ratelimitd.metrics import MAX_DENIED_VALUES, Metrics


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_pending_histogram_flushes_what_direct_observations_give() -> None:
    metrics = Metrics()
    bounds = metrics.request_latency._upper_bounds
    reference_registry = CollectorRegistry()
    reference = Histogram("ref", "reference", ("grpc_method",), buckets=bounds[:-1], registry=reference_registry)
    pending = metrics.histogram(metrics.request_latency, "ShouldRateLimit")
    assert pending is metrics.histogram(metrics.request_latency, "ShouldRateLimit")  # one per labels
    values = [0.0, 0.0001, 0.0002, 0.0003, 0.004, 0.004, 0.7, 3.0]  # 0.0002: exactly on a bound
    for v in values:
        pending.observe(v)
        reference.labels("ShouldRateLimit").observe(v)
    name = "ratelimit_service_response_time_seconds"
    method = {"grpc_method": "ShouldRateLimit"}
    assert sample(metrics.registry, f"{name}_count", **method) == 0  # not before the flush
    metrics.flush()
    metrics.flush()  # a second flush adds nothing
    for bound in [*(str(b) for b in bounds[:-1]), "+Inf"]:
        got = sample(metrics.registry, f"{name}_bucket", **method, le=bound)
        assert got == sample(reference_registry, "ref_bucket", **method, le=bound), bound
    assert sample(metrics.registry, f"{name}_count", **method) == len(values)
    assert sample(metrics.registry, f"{name}_sum", **method) == sample(reference_registry, "ref_sum", **method)


def test_rule_counters_flush_per_outcome() -> None:
    metrics = Metrics(near_limit_ratio=0.8)
    rule = Rule("d", "user", "ident", 10, Unit.SECOND, path=(("user", ""),))
    shadow = Rule("d", "shadow", "ident2", 10, Unit.SECOND, shadow_mode=True, path=(("shadow", ""),))
    metrics.record(rule, ("a",), 1, True, 9)  # within
    metrics.record(rule, ("a",), 2, True, 1)  # near: 1 < 10 * 0.2
    metrics.record(rule, ("a",), 3, False, 0)  # over
    metrics.record(rule, ("a",), 1, False, 0, from_cache=True)
    metrics.record(shadow, ("a",), 4, False, 0)
    name = "ratelimit_service_rate_limit_{}_total"
    user = {"domain": "d", "key1": "user", "key2": "", "key": "user"}
    assert sample(metrics.registry, name.format("total_hits"), **user) == 0
    text = generate_latest(metrics.exposition_registry()).decode()  # the exposition flushes first
    assert 'ratelimit_service_rate_limit_total_hits{domain="d",key="user",key1="user"} 7.0' in text
    expected = {"within_limit": 1, "near_limit": 2, "over_limit": 4, "over_limit_with_local_cache": 1}
    for stat, n in expected.items():
        assert sample(metrics.registry, name.format(stat), **user) == n, stat
    shadowed = {"domain": "d", "key1": "shadow", "key2": "", "key": "shadow"}
    assert sample(metrics.registry, name.format("shadow_mode"), **shadowed) == 4
    assert sample(metrics.registry, name.format("over_limit"), **shadowed) == 0
    metrics.record(rule, ("a",), 5, True, 9)
    metrics.flush()
    assert sample(metrics.registry, name.format("total_hits"), **user) == 12


# What envoyproxy/ratelimit's Prometheus output names (its default statsd mapping): family, type, label names.
ENVOY_RATELIMIT_OUTPUT = {
    ("ratelimit_service_rate_limit_total_hits", "domain key1"),
    ("ratelimit_service_rate_limit_over_limit", "domain key1"),
    ("ratelimit_service_rate_limit_near_limit", "domain key1"),
    ("ratelimit_service_rate_limit_within_limit", "domain key1"),
    ("ratelimit_service_rate_limit_shadow_mode", "domain key1"),
    ("ratelimit_service_rate_limit_total_hits", "domain key1 key2"),
    ("ratelimit_service_rate_limit_over_limit", "domain key1 key2"),
    ("ratelimit_service_rate_limit_near_limit", "domain key1 key2"),
    ("ratelimit_service_rate_limit_within_limit", "domain key1 key2"),
    ("ratelimit_service_rate_limit_shadow_mode", "domain key1 key2"),
    ("ratelimit_service_config_load_success", ""),
    ("ratelimit_service_config_load_error", ""),
    ("ratelimit_service_should_rate_limit_error", "err_type"),
    ("ratelimit_service_total_requests", "grpc_method"),
    ("ratelimit_service_response_time_seconds_count", "grpc_method"),
    ("ratelimit_service_response_time_seconds_sum", "grpc_method"),
    ("ratelimit_service_response_time_seconds_bucket", "grpc_method le"),
}


def test_every_metric_envoyproxy_ratelimit_exports_has_its_name_and_labels() -> None:
    """Dashboards and alerts written for envoyproxy/ratelimit work unchanged: every series it exports is here
    under the same sample name with at least its labels (ours add `key`, the whole stats key)."""
    metrics = Metrics()
    one_level = Rule("d", "k1_v1", "i1", 10, Unit.SECOND, path=(("k1", "v1"),))
    two_levels = Rule("d", "k1_v1.k2", "i2", 10, Unit.SECOND, path=(("k1", "v1"), ("k2", "")))
    for rule in (one_level, two_levels):
        metrics.record(rule, ("v1", "x")[: len(rule.path)], 1, True, 9)  # within
        metrics.record(rule, ("v1", "x")[: len(rule.path)], 1, True, 1)  # near
        metrics.record(rule, ("v1", "x")[: len(rule.path)], 1, False, 0)  # over
    metrics.record(Rule("d", "s", "i3", 10, Unit.SECOND, shadow_mode=True, path=(("s", ""),)), ("y",), 1, False, 0)
    metrics.record(
        Rule("d", "s.t", "i4", 1, Unit.SECOND, shadow_mode=True, path=(("s", ""), ("t", ""))), ("y", "z"), 1, False, 0
    )
    metrics.config_load_success.inc()
    metrics.config_load_errors.inc()
    metrics.should_rate_limit_error.labels("redis_error").inc()
    metrics.histogram(metrics.request_latency, "ShouldRateLimit").observe(0.001)
    families = list(text_string_to_metric_families(generate_latest(metrics.exposition_registry()).decode()))
    shown = {(s.name, " ".join(sorted(set(s.labels) - {"key"}))) for f in families for s in f.samples}
    missing = ENVOY_RATELIMIT_OUTPUT - shown
    assert not missing, sorted(missing)
    names = {s.name for f in families for s in f.samples}
    assert names.isdisjoint(f"{n}_total" for n, _ in ENVOY_RATELIMIT_OUTPUT)  # no second, suffixed copy
    two = [s for f in families for s in f.samples if s.labels.get("key") == "k1_v1.k2"]
    assert two and all((s.labels["key1"], s.labels["key2"]) == ("k1_v1", "k2") for s in two)


def test_the_fleet_view_counts_per_rule_and_denied_values_bounded() -> None:
    m = Metrics(near_limit_ratio=0.8)
    rule = Rule("d", "user", "id", 10, Unit.MINUTE, path=(("user", ""),))
    m.record(rule, ("alice",), 1, True, 9)
    m.record(rule, ("alice",), 1, True, 1)  # near the limit: allowed and near
    m.record(rule, ("mallory",), 2, False, 0)
    for i in range(MAX_DENIED_VALUES + 5):
        m.record(rule, (f"v{i}",), 1, False, 0)
    counts, denied = m.take_fleet()
    assert counts == {("d", "user"): [2, 2 + MAX_DENIED_VALUES + 5, 1, 0]}
    assert denied[("d", "user")]["mallory"] == 2
    assert len(denied[("d", "user")]) == MAX_DENIED_VALUES + 1 and denied[("d", "user")]["(other values)"] == 6
    assert m.take_fleet() == ({}, {})
    hashed = Metrics(hash_values=True)
    hashed.record(rule, ("secret-key",), 1, False, 0)
    (value,) = hashed.take_fleet()[1][("d", "user")]
    assert value.startswith("sha256:") and "secret" not in value
