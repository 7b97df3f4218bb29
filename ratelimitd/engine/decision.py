"""What the engine answers, independent of the face (Envoy RLS, native gRPC, HTTP) that encodes it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from ratelimitd.config.rules import Rule

UNLIMITED_REMAINING = 2**32 - 1


class Code(IntEnum):
    """Same numbers as Envoy's RateLimitResponse.Code."""

    UNKNOWN = 0
    OK = 1
    OVER_LIMIT = 2


@dataclass(slots=True)
class Status:
    code: Code = Code.OK
    rule: Rule | None = None
    remaining: int = 0
    reset_after_us: int = 0
    retry_after_us: int = 0  # 0 when allowed, -1 when the cost can never fit
    shadow_denied: bool = False


def ceil_div(us: int, unit: int) -> int:
    """Durations for callers round up (to ms or s): a client that waits that long is never early."""
    return max(0, -(-us // unit))


@dataclass(slots=True)
class Decision:
    code: Code
    statuses: list[Status]
    store_failed: bool = False
    # (store time in us, position in its store call): the order in which the store decided (0, 0 if not asked)
    store_order: tuple[int, int] = (0, 0)

    @property
    def retry_after_us(self) -> int:
        """When the whole request could pass again: the latest of its denying rules (-1: never)."""
        denied = [s.retry_after_us for s in self.statuses if s.code is Code.OVER_LIMIT and s.rule is not None]
        if not denied:
            return 0
        if any(r < 0 for r in denied):
            return -1
        return max(denied)

    def closest_to_limit(self) -> Status | None:
        """The status rate-limit headers describe, as envoyproxy/ratelimit picks it: the last non-quota
        OVER_LIMIT one, else the one with the least remaining."""
        chosen: Status | None = None
        for s in self.statuses:
            if s.rule is None:
                continue
            hard_over = s.code is Code.OVER_LIMIT and not s.rule.quota_mode
            closer = chosen is None or (chosen.code is not Code.OVER_LIMIT and s.remaining < chosen.remaining)
            if hard_over or closer:
                chosen = s
        return chosen
