"""envoyproxy/ratelimit's matching walk: exact > wildcard (config order) > default, no backtracking,
depth must equal the request's length."""

from __future__ import annotations

import pytest

from ratelimitd.config.loader import Domain, parse_domain
from ratelimitd.config.matcher import match

CONFIG = {
    "domain": "d",
    "descriptors": [
        {
            "key": "key1",
            "value": "value1",
            "descriptors": [
                {"key": "subkey1", "rate_limit": {"unit": "second", "requests_per_unit": 5, "name": "sub-default"}},
                {"key": "subkey1", "value": "subvalue1", "rate_limit": {"unit": "second", "requests_per_unit": 10}},
            ],
        },
        {"key": "key1", "descriptors": [{"key": "other", "rate_limit": {"unit": "hour", "requests_per_unit": 1}}]},
        {"key": "key2", "rate_limit": {"unit": "minute", "requests_per_unit": 20}},
        {"key": "key2", "value": "value2", "rate_limit": {"unit": "minute", "requests_per_unit": 30}},
        {"key": "key2", "value": "value3"},
        {"key": "path", "value": "/api/*", "rate_limit": {"unit": "second", "requests_per_unit": 7}},
        {"key": "path", "value": "/api/v1/*", "rate_limit": {"unit": "second", "requests_per_unit": 8}},
        {"key": "path", "value": "*.json", "rate_limit": {"unit": "second", "requests_per_unit": 9}},
        {"key": "path", "value": "/a*b*c", "rate_limit": {"unit": "second", "requests_per_unit": 11}},
        {
            "key": "files",
            "value": "f/*",
            "share_threshold": True,
            "rate_limit": {"unit": "second", "requests_per_unit": 3},
        },
        {
            "key": "key5",
            "value": "value5",
            "descriptors": [
                {"key": "subkey5", "value": "subvalue5", "rate_limit": {"unit": "second", "requests_per_unit": 1}}
            ],
        },
    ],
}


@pytest.fixture(scope="module")
def domain() -> Domain:
    return parse_domain(CONFIG, "f.yaml")


def limit(domain: Domain, *entries: tuple[str, str]) -> int | None:
    m = match(domain.tree, tuple(entries))
    return None if m is None else m.rule.requests_per_unit


def test_depth_must_equal_request_length(domain: Domain) -> None:
    assert limit(domain, ("key1", "value1")) is None
    assert limit(domain, ("key1", "value1"), ("subkey1", "x"), ("extra", "y")) is None


def test_exact_beats_default_at_each_level(domain: Domain) -> None:
    assert limit(domain, ("key1", "value1"), ("subkey1", "x")) == 5
    assert limit(domain, ("key1", "value1"), ("subkey1", "subvalue1")) == 10
    assert limit(domain, ("key2", "x")) == 20
    assert limit(domain, ("key2", "value2")) == 30


def test_leaf_without_rate_limit_is_allow_listed(domain: Domain) -> None:
    assert limit(domain, ("key2", "value3")) is None


def test_no_backtracking_to_default_subtree(domain: Domain) -> None:
    # key1=value1 matched exactly; its children have no "other", and the key1 default is not tried.
    assert limit(domain, ("key1", "value1"), ("other", "x")) is None
    assert limit(domain, ("key1", "zzz"), ("other", "x")) == 1


def test_value_mismatch_deeper_has_no_default(domain: Domain) -> None:
    assert limit(domain, ("key5", "value5"), ("subkey5", "other")) is None


def test_wildcards_first_match_in_config_order(domain: Domain) -> None:
    assert limit(domain, ("path", "/api/v1/users")) == 7  # "/api/*" is listed first
    assert limit(domain, ("path", "/api/")) == 7  # * matches the empty string
    assert limit(domain, ("path", "/x/data.json")) == 9
    assert limit(domain, ("path", "/aXbYc")) == 11
    assert limit(domain, ("path", "/abc")) == 11
    assert limit(domain, ("path", "/other")) is None


def test_unknown_key_matches_nothing(domain: Domain) -> None:
    assert limit(domain, ("nope", "x")) is None


def test_wildcard_matches_value_not_key_value(domain: Domain) -> None:
    # envoyproxy/ratelimit would match "path_/api/*" against key "path_/api" + value "x"; we never do.
    assert limit(domain, ("path_/api", "x")) is None


def test_share_threshold_counts_all_values_together(domain: Domain) -> None:
    a = match(domain.tree, (("files", "f/a"),))
    b = match(domain.tree, (("files", "f/b"),))
    p = match(domain.tree, (("path", "/api/a"),))
    assert a is not None and b is not None and p is not None
    assert a.counter_values == b.counter_values == ("f/*",)
    assert p.counter_values == ("/api/a",)


def test_rule_names_and_stats_keys(domain: Domain) -> None:
    m = match(domain.tree, (("key1", "value1"), ("subkey1", "x")))
    assert m is not None and m.rule.name == "sub-default" and m.rule.stats_key == "key1_value1.subkey1"
