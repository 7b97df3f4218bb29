"""The hot command alone: one batched script call (EVALSHA of the assembled script) through redis-py's
asyncio client and through ratelimitd's lean client (store/fast_client.py), sequentially and with 16 calls
in flight. Picks the hot-path client by numbers; writes benchmarks/results/store_clients.md.

    python -m benchmarks.store_clients
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import redis.asyncio as aioredis
import uvloop

from ratelimitd.config.rules import Rule
from ratelimitd.config.units import Unit
from ratelimitd.store.checks import ENFORCED, CheckBatch, build_check
from ratelimitd.store.embedded import EmbeddedRedis
from ratelimitd.store.fast_client import FastRedis
from ratelimitd.store.redis_store import RedisStore

RESULTS = Path(__file__).resolve().parents[1] / "results" / "store_clients.md"


def batch(i: int) -> list[CheckBatch]:
    rule = Rule("bench", "k", "bench-rule", 10**9, Unit.SECOND)
    checks = tuple(build_check(rule, f"rl:{{bench|{i % 64}|{j}}}", 1, ENFORCED) for j in range(3))
    return [CheckBatch(checks)] * 4  # 4 requests of 3 checks: a typical coalesced call


async def measure(store: RedisStore, seconds: float, concurrency: int) -> dict[str, float]:
    cpu0, t0 = time.process_time(), time.perf_counter()
    calls = 0

    async def worker() -> None:
        nonlocal calls
        while time.perf_counter() - t0 < seconds:
            await store.evaluate(batch(calls))
            calls += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"calls_per_s": calls / wall, "client_cpu_us_per_call": cpu / calls * 1e6}


async def main() -> None:
    server = EmbeddedRedis().start()
    rows: list[tuple[str, int, dict[str, float]]] = []
    try:
        client = aioredis.Redis.from_url(server.url)
        fast = FastRedis(server.url)
        for name, scripts in (("redis-py asyncio (+hiredis)", None), ("fast_client (raw asyncio + hiredis)", fast)):
            store = RedisStore(client, timeout=1.0, scripts=scripts)
            await store.evaluate(batch(0))  # load the script
            for concurrency in (1, 16):
                rows.append((name, concurrency, await measure(store, 3.0, concurrency)))
                print(rows[-1], flush=True)
        await fast.close()
        await client.aclose()
    finally:
        server.close()
    lines = [
        "# Hot-path Redis client (one 12-check script call)",
        "",
        "| client | calls in flight | calls/s | client CPU µs per call |",
        "|---|---|---|---|",
    ]
    lines += [f"| {n} | {c} | {r['calls_per_s']:.0f} | {r['client_cpu_us_per_call']:.0f} |" for n, c, r in rows]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
