"""What the batch script costs Redis per call, beside the cheapest script that touches the same keys (an INCR
each): hot (pipelined, Redis busy) and at light load (one call every 2 ms, as a worker at a few hundred
checks/s sends them, when Redis's caches have gone cold). Redis's own time per call from INFO commandstats, so
the network and the client do not count. Light-load round trips are printed too, for scale.

At light load every µs here is paid by a request in full and more: a reply that comes later finds the worker's
vCPU halted (docs/performance.md). Writes benchmarks/results/script_cost.md.

    python -m benchmarks.experiments.script_cost [--rounds 3] [--script name=path.lua ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import redis

from benchmarks.run import RESULTS
from ratelimitd.config.rules import Rule
from ratelimitd.config.units import Unit
from ratelimitd.store.checks import ENFORCED, CheckBatch, build_check
from ratelimitd.store.embedded import EmbeddedRedis
from ratelimitd.store.script_call import encode_batch
from ratelimitd.store.scripts import batch_script

TINY = "for i = 1, #KEYS do redis.call('INCR', KEYS[i] .. '#tiny') end return #KEYS"


def server_us_per_call(client: redis.Redis) -> float:
    stats = client.info("commandstats")
    calls = [v for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval")]
    return float(sum(v["usec"] for v in calls) / max(1, sum(v["calls"] for v in calls)))


def measure(client: redis.Redis, source: str, checks: int, light: bool) -> tuple[float, float]:
    """(Redis µs per call, client round trip p50 µs) for one script on `checks` fixed-window checks."""
    sha = client.script_load(source)
    rule = Rule("bench", "k", "script_cost", 10**9, Unit.SECOND)
    batch = CheckBatch(tuple(build_check(rule, f"script_cost:{i}", 1, ENFORCED) for i in range(checks)))
    keys, args = encode_batch([batch], None)
    for _ in range(100):
        client.evalsha(sha, len(keys), *keys, *args)
    client.config_resetstat()
    trips: list[float] = []
    if light:
        for _ in range(400):
            started = time.perf_counter()
            client.evalsha(sha, len(keys), *keys, *args)
            trips.append(time.perf_counter() - started)
            time.sleep(0.002)
    else:
        pipe = client.pipeline(transaction=False)
        for _ in range(5000):
            pipe.evalsha(sha, len(keys), *keys, *args)
        pipe.execute()
    return server_us_per_call(client), statistics.median(trips) * 1e6 if trips else 0.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--script", action="append", default=[], help="name=path of another script to compare")
    args = ap.parse_args()
    scripts = {"tiny (an INCR per key)": TINY, "batch.lua as shipped": batch_script()}
    for spec in args.script:
        name, _, path = spec.partition("=")
        scripts[name] = Path(path).read_text()
    store = EmbeddedRedis().start()
    results: dict[tuple[str, int, bool], list[tuple[float, float]]] = {}
    try:
        client = redis.Redis.from_url(store.url)
        for _ in range(args.rounds):
            for name, source in scripts.items():
                for checks in (1, 3):
                    for light in (False, True):
                        results.setdefault((name, checks, light), []).append(measure(client, source, checks, light))
    finally:
        store.close()
    lines = [
        "# Redis time per batch-script call",
        "",
        f"`python -m benchmarks.experiments.script_cost`: Redis µs per call from INFO commandstats, medians of "
        f"{args.rounds} alternating rounds; hot = 5,000 calls pipelined, light = one call every 2 ms (round trip "
        "p50 from the client). Python " + sys.version.split()[0] + ".",
        "",
        "| script | checks | hot µs/call | light-load µs/call | light-load round trip µs |",
        "|---|---|---|---|---|",
    ]
    for name in scripts:
        for checks in (1, 3):
            hot = statistics.median(s for s, _ in results[name, checks, False])
            slow = results[name, checks, True]
            lines.append(
                f"| {name} | {checks} | {hot:.1f} | {statistics.median(s for s, _ in slow):.1f} | "
                f"{statistics.median(t for _, t in slow):.0f} |"
            )
    text = "\n".join(lines) + "\n"
    (RESULTS / "script_cost.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
