"""The floor under ratelimitd's added latency: what one Redis call per request costs a gRPC server here at all.

Same open-loop runs as `make bench` (h2load at a steady rate, every request's time logged, alternating rounds,
medians), for: the bare sync and aio servers (no store), the same servers making one Redis script call per
request (`--flavour sync-redis|aio-redis` of baseline_server.py: an INCR per descriptor, nothing else), and
ratelimitd as shipped. "aio-redis minus bare sync" is what any grpc.aio design that asks Redis once per
request pays on this machine before doing any rate limiting; ratelimitd minus aio-redis is its own share.
Writes benchmarks/results/latency_floor.md.

    python -m benchmarks.experiments.latency_floor [--rates 500,2000] [--rounds 4] [--seconds 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import redis

from benchmarks.run import RESULTS, Server, bare_server, ratelimitd_server, serving, steady_rates
from ratelimitd.store.embedded import EmbeddedRedis


def with_redis(server: Server, url: str) -> Server:
    server.cmd += ["--redis-url", url]
    return server


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="500,2000")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    store = EmbeddedRedis().start()
    servers = [
        bare_server("bare sync x2 pinned", "sync", 2, pin=True),
        bare_server("bare aio x2 pinned", "aio", 2, pin=True),
        with_redis(bare_server("sync + 1 Redis call x2 pinned", "sync-redis", 2, pin=True), store.url),
        with_redis(bare_server("aio + 1 Redis call x2 pinned", "aio-redis", 2, pin=True), store.url),
        ratelimitd_server("ratelimitd x2", store.url, 2),
    ]
    try:
        with tempfile.TemporaryDirectory() as tmp, serving(servers):
            out = steady_rates(servers, rates, args.seconds, args.rounds, Path(tmp), redis.Redis.from_url(store.url))
    finally:
        store.close()
    lines = [
        "# The latency floor: one Redis call per request, without rate limiting",
        "",
        f"`python -m benchmarks.experiments.latency_floor`: open loop (h2load `--rps`, 8 connections), "
        f"{args.rounds} alternating rounds of {args.seconds:g} s, medians; added = minus the bare sync server in "
        "the same round (median of the per-round differences). Python " + sys.version.split()[0] + ".",
        "",
        "| server | descriptors | rate/s | p50 ms | p99 ms | added p50 | added p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    base = "bare sync x2 pinned"
    for (name, descriptors, rate), points in out.items():
        ref = out[base, descriptors, rate]
        added = [(p.p50_ms - r.p50_ms, p.p99_ms - r.p99_ms) for p, r in zip(points, ref, strict=True)]
        lines.append(
            f"| {name} | {descriptors} | {rate} | {statistics.median(p.p50_ms for p in points):.2f} | "
            f"{statistics.median(p.p99_ms for p in points):.2f} | {statistics.median(a for a, _ in added):+.2f} | "
            f"{statistics.median(b for _, b in added):+.2f} |"
        )
    text = "\n".join(lines) + "\n"
    (RESULTS / "latency_floor.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
