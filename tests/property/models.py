"""Pure-Python reference models of the algorithms, in exact arithmetic, one decision at a time.

Each `decide(t, cost)` returns whether the model admits and applies the charge if so; the property
tests require the Lua scripts to make the same decision at every step.
"""

from __future__ import annotations

from collections import defaultdict
from fractions import Fraction
from math import ceil


def need(cost: int) -> int:
    return max(cost, 1)


class FixedWindow:
    def __init__(self, limit: int, window_us: int) -> None:
        self.n, self.w = limit, window_us
        self.count: dict[int, int] = defaultdict(int)

    def decide(self, t: int, cost: int) -> bool:
        k = t // self.w
        ok = self.count[k] + need(cost) <= self.n
        if ok:
            self.count[k] += cost
        return ok

    def remaining(self, t: int) -> int:
        return self.n - self.count[t // self.w]


class TokenBucket:
    def __init__(self, limit: int, window_us: int, burst: int) -> None:
        self.rate = Fraction(limit, window_us)
        self.burst = burst
        self.tokens = Fraction(burst)
        self.last: int | None = None

    def _refill(self, t: int) -> None:
        if self.last is not None and t > self.last:
            self.tokens = min(Fraction(self.burst), self.tokens + (t - self.last) * self.rate)
        self.last = t if self.last is None else max(self.last, t)

    def decide(self, t: int, cost: int) -> bool:
        self._refill(t)
        ok = self.tokens >= need(cost)
        if ok:
            self.tokens -= cost
        return ok


class SlidingWindow:
    def __init__(self, limit: int, window_us: int) -> None:
        self.n, self.w = limit, window_us
        self.count: dict[int, int] = defaultdict(int)

    def estimate(self, t: int) -> int:
        k, e = divmod(t, self.w)
        prev = self.count.get(k - 1, 0)
        return ceil(Fraction(prev * (self.w - e), self.w)) + self.count.get(k, 0)

    def decide(self, t: int, cost: int) -> bool:
        ok = self.estimate(t) + need(cost) <= self.n
        if ok:
            self.count[t // self.w] += cost
        return ok


class SlidingLog:
    def __init__(self, limit: int, window_us: int) -> None:
        self.n, self.w = limit, window_us
        self.log: list[tuple[int, int]] = []

    def used(self, t: int) -> int:
        return sum(c for ts, c in self.log if ts > t - self.w)

    def decide(self, t: int, cost: int) -> bool:
        ok = self.used(t) + need(cost) <= self.n
        if ok and cost:
            self.log.append((t, cost))
        return ok


class Quota:
    def __init__(self, limit: int) -> None:
        self.n = limit
        self.used: dict[int, int] = defaultdict(int)

    def decide(self, period_start: int, cost: int) -> bool:
        ok = self.used[period_start] + need(cost) <= self.n
        if ok:
            self.used[period_start] += cost
        return ok
