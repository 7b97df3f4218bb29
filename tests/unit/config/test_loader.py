"""Config parsing and the exact problems reported for configs envoyproxy/ratelimit also rejects."""

from __future__ import annotations

from pathlib import Path

import pytest

from ratelimitd.config.loader import ConfigError, load_config, parse_domain


def problems(data: object) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_domain(data, "f.yaml")
    return [str(p) for p in err.value.problems]


def test_valid_envoy_config_loads() -> None:
    d = parse_domain(
        {
            "domain": "d",
            "descriptors": [{"key": "k", "value": "v", "rate_limit": {"unit": "Second", "requests_per_unit": 5}}],
        },
        "f.yaml",
    )
    assert d.name == "d" and len(d.rules) == 1
    assert d.rules[0].requests_per_unit == 5 and d.rules[0].algorithm == "fixed_window"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"domain": "", "descriptors": []}, "f.yaml: (root): config file cannot have empty domain"),
        ({"domain": "d", "descriptors": [{"key": ""}]}, "f.yaml: descriptors[0]: descriptor has empty key"),
        (
            {"domain": "d", "descriptors": [{"key": "k", "rate_limit": {"unit": "fortnight"}}]},
            "f.yaml: descriptors[0].rate_limit: invalid rate limit unit 'fortnight'",
        ),
        (
            {"domain": "d", "descriptors": [{"key": "k", "ratelimit": {}}]},
            "f.yaml: descriptors[0].ratelimit: unknown key 'ratelimit'",
        ),
        (
            {"domain": "d", "descriptors": [{"key": "k", "rate_limit": {"unit": "second", "requestsperunit": 1}}]},
            "f.yaml: descriptors[0].rate_limit.requestsperunit: unknown key 'requestsperunit'",
        ),
        (
            {"domain": "d", "descriptors": [{"key": "k", "rate_limit": {"unlimited": True, "unit": "second"}}]},
            "f.yaml: descriptors[0].rate_limit: should not specify rate limit unit when unlimited",
        ),
        (
            {
                "domain": "d",
                "descriptors": [
                    {"key": "k", "rate_limit": {"unit": "second", "name": "a", "replaces": [{"name": "a"}]}}
                ],
            },
            "f.yaml: descriptors[0].rate_limit: replaces should not contain name of same descriptor",
        ),
        (
            {
                "domain": "d",
                "descriptors": [{"key": "k", "rate_limit": {"unit": "second", "replaces": [{"name": ""}]}}],
            },
            "f.yaml: descriptors[0].rate_limit.replaces[0]: should not have an empty replaces entry",
        ),
        (
            {"domain": "d", "descriptors": [{"key": "k", "value": "v"}, {"key": "k", "value": "v"}]},
            "f.yaml: (root): duplicate descriptor composite key 'd.k_v'",
        ),
        (
            {"domain": "d", "descriptors": [{"key": "a", "descriptors": [{"key": "b"}, {"key": "b"}]}]},
            "f.yaml: descriptors[0]: duplicate descriptor composite key 'b'",
        ),
        (
            {"domain": "d", "descriptors": [{"key": "k", "rate_limit": {"unit": "second", "requests_per_unit": -1}}]},
            "f.yaml: descriptors[0].rate_limit.requests_per_unit: Input should be greater than or equal to 0",
        ),
        ({"domain": "d", "descriptors": ["k"]}, "f.yaml: descriptors[0]: must be a mapping, not str"),
        (
            {"domain": "d", "descriptors": [{"key": "k", "rate_limit": {"unit": "minute", "algorithm": "quota"}}]},
            "f.yaml: descriptors[0].rate_limit: algorithm quota needs a calendar unit: day, week, month or year",
        ),
        (
            {
                "domain": "d",
                "descriptors": [
                    {"key": "k", "rate_limit": {"unit": "month", "algorithm": "quota", "timezone": "Mars/Base"}}
                ],
            },
            "f.yaml: descriptors[0].rate_limit: unknown timezone 'Mars/Base'",
        ),
        (
            {"domain": "d", "descriptors": [{"key": "k", "rate_limit": {"unit": "second", "burst": 5}}]},
            "f.yaml: descriptors[0].rate_limit: burst is only meaningful with algorithm token_bucket",
        ),
        (
            {"domain": "d", "descriptors": [{"key": "k", "rate_limit": {"unit": "second", "algorithm": "leaky"}}]},
            "f.yaml: descriptors[0].rate_limit.algorithm: Input should be 'fixed_window', 'token_bucket', "
            "'sliding_window', 'sliding_log' or 'quota'",
        ),
        (
            {"domain": "d", "descriptors": [{"key": "k", "value": "x", "share_threshold": True}]},
            "f.yaml: descriptors[0]: share_threshold can only be used with a wildcard value",
        ),
        (
            {"domain": "d", "descriptors": [{"key": "k", "rate_limit": {"requests_per_unit": 1}}]},
            "f.yaml: descriptors[0].rate_limit: rate limit unit must be set (second, minute, hour, day, week, month, "
            "year)",
        ),
        ({"descriptors": []}, "f.yaml: domain: missing required key 'domain'"),
        (["not", "a", "map"], "f.yaml: (root): config file must be a mapping with 'domain' and 'descriptors'"),
    ],
)
def test_rejected_configs_name_file_path_and_reason(data: object, expected: str) -> None:
    assert expected in problems(data)


def test_every_problem_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("domain: a\ndescriptors:\n  - key: ''\n")
    (tmp_path / "b.yaml").write_text("domain: b\ndescriptors: [{key: k, rate_limit: {unit: eon}}]\n")
    (tmp_path / "c.yaml").write_text("domain: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    files = sorted(Path(p.file).name for p in err.value.problems)
    assert files == ["a.yaml", "b.yaml", "c.yaml"]
    assert any("invalid YAML" in p.reason for p in err.value.problems)


def test_duplicate_domain_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("domain: same\n")
    (tmp_path / "b.yaml").write_text("domain: same\n")
    with pytest.raises(ConfigError, match="duplicate domain 'same'"):
        load_config(tmp_path)


def test_directory_ignores_dotfiles_and_non_yaml(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("domain: a\n")
    (tmp_path / ".a.yaml.swp").write_text("garbage: [")
    (tmp_path / "README.txt").write_text("not yaml: [")
    assert list(load_config(tmp_path).domains) == ["a"]


def test_missing_path_is_a_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file or directory"):
        load_config(tmp_path / "nope")


def test_extensions_parse() -> None:
    d = parse_domain(
        {
            "domain": "d",
            "descriptors": [
                {
                    "key": "a",
                    "rate_limit": {
                        "unit": "minute",
                        "unit_multiplier": 15,
                        "requests_per_unit": 100,
                        "algorithm": "sliding_window",
                    },
                },
                {
                    "key": "b",
                    "rate_limit": {"unit": "second", "requests_per_unit": 10, "burst": 40, "algorithm": "token_bucket"},
                },
                {"key": "c", "rate_limit": {"unit": "second", "requests_per_unit": 10, "algorithm": "token_bucket"}},
            ],
        },
        "f.yaml",
    )
    a, b, c = d.rules
    assert a.window_seconds == 900 and b.burst == 40 and c.burst == 10


def test_rule_identity_differs_by_limit_and_algorithm() -> None:
    def ident(rl: dict[str, object]) -> str:
        return parse_domain({"domain": "d", "descriptors": [{"key": "k", "rate_limit": rl}]}, "f").rules[0].ident

    base = {"unit": "second", "requests_per_unit": 5}
    idents = {
        ident(base),
        ident({**base, "requests_per_unit": 6}),
        ident({**base, "unit": "minute"}),
        ident({**base, "algorithm": "sliding_log"}),
        ident({**base, "unit_multiplier": 2}),
    }
    assert len(idents) == 5


def test_examples_are_valid() -> None:
    root = Path(__file__).resolve().parents[3] / "examples" / "config"
    assert load_config(root).domains


def _limit(algorithm: str, requests_per_unit: int, unit: str = "year", **more: object) -> dict[str, object]:
    rate_limit = {"unit": unit, "requests_per_unit": requests_per_unit, "algorithm": algorithm, **more}
    return {"domain": "d", "descriptors": [{"key": "k", "rate_limit": rate_limit}]}


@pytest.mark.parametrize("unit", ["second", "minute", "hour", "day", "week", "month", "year"])
def test_fixed_window_takes_any_uint32_for_every_unit(unit: str) -> None:
    """As envoyproxy/ratelimit does: the fixed window only adds and compares counts."""
    for n in (4_000_000_000, 2**32 - 1):
        assert parse_domain(_limit("fixed_window", n, unit), "f.yaml").rules[0].requests_per_unit == n
    assert problems(_limit("fixed_window", 2**32, unit)) == [
        "f.yaml: descriptors[0].rate_limit.requests_per_unit: Input should be less than or equal to 4294967295"
    ]


def test_quota_takes_any_uint32() -> None:
    assert parse_domain(_limit("quota", 2**32 - 1), "f.yaml").rules[0].requests_per_unit == 2**32 - 1


@pytest.mark.parametrize(
    ("algorithm", "unit", "multiplier", "largest"),
    [
        ("token_bucket", "year", 1, (2**52 - 1) // (365 * 86400)),
        ("sliding_window", "year", 1, (2**52 - 1) // (365 * 86400)),
        ("sliding_window", "day", 30, (2**52 - 1) // (30 * 86400)),
        ("sliding_window", "hour", 1, 2**32 - 1),  # a short window takes any uint32
    ],
)
def test_other_algorithms_name_the_largest_value_for_their_window(
    algorithm: str, unit: str, multiplier: int, largest: int
) -> None:
    assert parse_domain(_limit(algorithm, largest, unit, unit_multiplier=multiplier), "f.yaml").rules
    if largest == 2**32 - 1:
        return
    (problem,) = problems(_limit(algorithm, largest + 1, unit, unit_multiplier=multiplier))
    per = f"{multiplier} x {unit}" if multiplier > 1 else unit
    assert problem == (
        f"f.yaml: descriptors[0].rate_limit: {algorithm} counts at most {largest} per {per} exactly; "
        "requests_per_unit (and burst) must be <= that (fixed_window takes any uint32)"
    )
