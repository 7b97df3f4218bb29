"""The command line as users and scripts drive it: validate, check against the example config, serve."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ratelimitd.store.embedded import EmbeddedRedis
from tests.service import ServiceProcess

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "config"


def ratelimitd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ratelimitd", *args], capture_output=True, text=True, timeout=60)


def test_validate_examples() -> None:
    r = ratelimitd("config", "validate", str(EXAMPLES))
    assert r.returncode == 0, r.stderr
    assert "domain 'api'" in r.stdout


def test_validate_reports_every_problem(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight}\n")
    (tmp_path / "b.yaml").write_text("domain: b\ndescriptors:\n  - kee: k\n")
    r = ratelimitd("config", "validate", str(tmp_path))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert f"{tmp_path / 'a.yaml'}: descriptors[0].rate_limit: invalid rate limit unit 'fortnight'" in lines
    assert f"{tmp_path / 'b.yaml'}: descriptors[0].kee: unknown key 'kee'" in lines


def test_serve_with_bad_config_exits_1_naming_the_problem(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("domain: ''\n")
    r = ratelimitd("serve", "--config", str(tmp_path), "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0")
    assert r.returncode == 1
    assert "config file cannot have empty domain" in r.stderr


@pytest.fixture(scope="module")
def example_service() -> Iterator[ServiceProcess]:
    svc = ServiceProcess(EXAMPLES, None).start()  # embedded Redis, as `make run`
    yield svc
    assert svc.stop() == 0


def test_embedded_redis_is_announced_and_stopped() -> None:
    svc = ServiceProcess(EXAMPLES, None).start()
    match = re.search(r"started embedded \S+ on 127\.0\.0\.1:(\d+)", svc.log_text())
    assert match, svc.log_text()
    embedded = EmbeddedRedis(port=int(match.group(1)))
    assert embedded.ping()
    assert svc.stop() == 0
    assert not embedded.ping()


def test_check_ok_then_over_limit_at_the_configured_limit(example_service: ServiceProcess) -> None:
    ip = f"10.{uuid.uuid4().int % 250}.0.1"
    args = [
        "check",
        "--target",
        example_service.target,
        "--domain",
        "api",
        "--descriptor",
        f"remote_address={ip},path=/login",
    ]
    results = [ratelimitd(*args) for _ in range(6)]
    assert [r.returncode for r in results] == [0, 0, 0, 0, 0, 2]
    first, last = json.loads(results[0].stdout), json.loads(results[-1].stdout)
    assert first["overall_code"] == "OK" and first["statuses"][0]["limit_remaining"] == 4
    assert last["overall_code"] == "OVER_LIMIT"
    assert last["statuses"][0]["current_limit"]["name"] == "login-attempts"


def test_check_unreachable_target_exits_1() -> None:
    r = ratelimitd("check", "--target", "127.0.0.1:1", "--domain", "api", "--descriptor", "a=b", "--timeout", "1")
    assert r.returncode == 1 and "UNAVAILABLE" in r.stderr


def test_check_rejects_malformed_descriptor() -> None:
    r = ratelimitd("check", "--domain", "api", "--descriptor", "novalue")
    assert r.returncode == 2 and "key=value" in r.stderr


def test_config_explain_names_rule_algorithm_and_key() -> None:
    r = ratelimitd(
        "config", "explain", str(EXAMPLES), "--domain", "api", "--descriptor", "remote_address=10.0.0.1,path=/login"
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["rule"]["name"] == "login-attempts" and out["rule"]["algorithm"] == "sliding_log"
    assert out["rule"]["unit_multiplier"] == 5 and out["redis_key"].startswith("rl:{api|")
    assert out["rule"]["largest_requests_per_unit"] == 10_000  # sliding_log's bound
    assert out["redis_key"].endswith("|10.0.0.1|%2Flogin}")
    assert out["rlqs"]["suits_rlqs"] is False and out["rlqs"]["advice"].startswith("keep on the RLS path")
    nothing = json.loads(
        ratelimitd("config", "explain", str(EXAMPLES), "--domain", "api", "--descriptor", "nope=x").stdout
    )
    assert nothing["match"] is None


def test_config_schema_validates_the_examples() -> None:
    r = ratelimitd("config", "schema")
    assert r.returncode == 0
    schema = json.loads(r.stdout)
    assert schema["properties"]["domain"]["type"] == "string"
    rl = schema["$defs"]["RateLimitModel"]["properties"]
    assert set(rl["algorithm"]["enum"]) == {"fixed_window", "token_bucket", "sliding_window", "sliding_log", "quota"}
    assert schema["$defs"]["DescriptorModel"]["additionalProperties"] is False


def test_config_diff(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    (old / "d.yaml").write_text(
        "domain: d\ndescriptors:\n  - {key: a, rate_limit: {unit: second, requests_per_unit: 1}}\n"
        "  - {key: b, rate_limit: {unit: second, requests_per_unit: 1}}\n"
    )
    (new / "d.yaml").write_text(
        "domain: d\ndescriptors:\n  - {key: a, rate_limit: {unit: second, requests_per_unit: 2}}\n"
        "  - {key: c, rate_limit: {unit: hour, requests_per_unit: 1, algorithm: sliding_log}}\n"
    )
    r = ratelimitd("config", "diff", str(old), str(new))
    assert r.returncode == 3
    assert "- d.b: 1 per second, fixed_window" in r.stdout
    assert "+ d.c: 1 per hour, sliding_log" in r.stdout
    assert "~ d.a: 1 per second, fixed_window\n  -> d.a: 2 per second, fixed_window" in r.stdout
    same = ratelimitd("config", "diff", str(old), str(old))
    assert same.returncode == 0 and "no differences" in same.stdout
