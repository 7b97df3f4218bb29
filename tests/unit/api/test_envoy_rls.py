"""Encoding a decision as Envoy's RateLimitResponse: statuses, and the rate-limit headers (presentation)."""

from __future__ import annotations

from envoy.service.ratelimit.v3 import rls_pb2

from ratelimitd.api.envoy_rls import encode
from ratelimitd.config.rules import Rule
from ratelimitd.config.units import Unit
from ratelimitd.engine.decision import Code, Decision, Status

RLS = rls_pb2.RateLimitResponse


def decision() -> Decision:
    quota = Rule("d", "q", "iq", 5, Unit.MINUTE, quota_mode=True, name="q")
    hard = Rule("d", "h", "ih", 10, Unit.MINUTE, name="h")
    return Decision(
        Code.OK,
        [
            Status(Code.OVER_LIMIT, quota, 0, 30_000_001),  # a quota descriptor over its limit
            Status(Code.OK, hard, 3, 59_000_000),
            Status(),  # matched no rule
        ],
    )


def test_statuses_carry_limit_remaining_and_reset_in_whole_seconds_rounded_up() -> None:
    resp = encode(decision())
    assert resp.overall_code == RLS.OK
    assert [(s.code, s.limit_remaining, s.duration_until_reset.seconds) for s in resp.statuses] == [
        (RLS.OVER_LIMIT, 0, 31),
        (RLS.OK, 3, 59),
        (RLS.OK, 0, 0),
    ]
    assert resp.statuses[1].current_limit.requests_per_unit == 10 and resp.statuses[1].current_limit.name == "h"
    assert not resp.statuses[2].HasField("current_limit")
    assert not resp.response_headers_to_add  # headers only when asked for


def test_headers_describe_the_last_hard_limit_over_else_the_least_remaining() -> None:
    headers = {h.key: h.value for h in encode(decision(), with_headers=True).response_headers_to_add}
    # the quota descriptor being over does not deny, so the headers describe the closest status: remaining 0
    assert headers == {"RateLimit-Limit": "5", "RateLimit-Remaining": "0", "RateLimit-Reset": "31"}
