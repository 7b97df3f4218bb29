"""(d): the same checks done in-process with the `limits` library's Redis storage, the per-request cost
a Python shop pays without a service. One process, one thread, sequential calls."""

from __future__ import annotations

import statistics
import time
from typing import Any


def measure(redis_url: str, seconds: float, keys: int = 64) -> dict[str, Any]:
    from limits import parse, storage, strategies

    store = storage.storage_from_string(redis_url)
    limiter = strategies.FixedWindowRateLimiter(store)
    item = parse("1000000000/second")
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        limiter.hit(item, "bench", str(n % keys))
        latencies.append(time.perf_counter() - t0)
        n += 1
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    total = sum(latencies)
    return {
        "checks_per_s": n / total,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "p999_ms": pct(0.999),
        "mean_ms": statistics.fmean(latencies) * 1000,
        "checks": n,
    }
