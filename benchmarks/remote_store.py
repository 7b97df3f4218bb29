"""ratelimitd against a remote Redis: the store behind `delay_proxy.py`, which delays every reply (default
1 ms, so about 1 ms more per round trip), beside the same service on loopback Redis and the bare
server. What the coalescer does there: requests per store call, latency at steady rates, throughput at
saturation, for the default (no linger) and the opt-in `--batch-linger`. Writes
benchmarks/results/remote_store.{json,md}.

    python -m benchmarks.remote_store [--delay 0.001] [--seconds 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import redis

from benchmarks import latency
from benchmarks.run import RESULTS, Point, Server, bare_server, measure, ratelimitd_server, serving, steady_rates
from ratelimitd.store.embedded import EmbeddedRedis, free_port


def batch_size(runs: list[Point]) -> float | None:
    calls = [r.script_calls_per_check for r in runs if r.script_calls_per_check]
    return 1 / statistics.median(calls) if calls else None


def ping_p50(port: int, n: int = 500) -> float:
    """p50 of PING round trips (ms) at 2 ms intervals: what one store call costs on the wire."""
    client = redis.Redis(port=port)
    times = []
    for _ in range(n):
        started = time.perf_counter()
        client.ping()
        times.append((time.perf_counter() - started) * 1000)
        time.sleep(0.002)
    client.close()
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay", type=float, default=0.001, help="seconds added to every reply")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    w = args.workers
    store = EmbeddedRedis().start()
    proxy_port = free_port()
    proxy = subprocess.Popen(
        [
            *(sys.executable, "-m", "benchmarks.delay_proxy", "--listen", str(proxy_port)),
            *("--target", f"127.0.0.1:{store.port}", "--delay", str(args.delay)),
        ],
        start_new_session=True,
    )
    remote = f"redis://127.0.0.1:{proxy_port}/0"
    time.sleep(1.0)
    direct, rtt = ping_p50(store.port), ping_p50(proxy_port)
    servers: list[Server] = [
        bare_server(f"a: bare grpc.aio x{w} pinned", "aio", w, pin=w > 1),
        ratelimitd_server(f"c: ratelimitd x{w}, loopback Redis", store.url, w),
        ratelimitd_server(f"r: ratelimitd x{w}, Redis +{args.delay * 1000:g} ms RTT", remote, w),
        ratelimitd_server(
            f"r+linger: ratelimitd x{w} --batch-linger 0.005, Redis +{args.delay * 1000:g} ms RTT",
            remote,
            w,
            ["--batch-linger", "0.005"],
        ),
    ]
    rclient = redis.Redis.from_url(store.url)
    saturation: dict[str, list[Point]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmpdir, serving(servers):
            tmp = Path(tmpdir)
            time.sleep(1.0)
            for _ in range(args.rounds):
                for server in servers:
                    point = measure(server, 128, args.seconds, tmp, rclient)
                    saturation.setdefault(server.name, []).append(point)
                    print(f"  {server.name:60s} 128 in flight: {point.decided_per_s:7.0f} decided/s", flush=True)
            steady = steady_rates(servers, [500, 2000], args.seconds, args.rounds, tmp, rclient)
    finally:
        proxy.terminate()
        proxy.wait(10)
        store.close()
    rows = []
    for name, runs in saturation.items():
        rows.append(
            {
                "variant": name,
                "decided_per_s_at_128": statistics.median(r.decided_per_s for r in runs),
                "p99_ms_at_128": statistics.median(r.p99_ms for r in runs),
                "requests_per_store_call_at_128": batch_size(runs),
                "failure_mode_answers": sum(r.failure_mode for r in runs),
            }
        )
    medians = [latency.median(runs) for runs in steady.values()]
    doc = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "reply_delay_s": args.delay,
        "ping_p50_ms": {"direct": direct, "through_proxy": rtt},
        "saturation": rows,
        "steady_rate": [asdict(p) for p in medians],
        "added_latency": latency.added(steady),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "remote_store.json").write_text(json.dumps(doc, indent=2))
    lines = [
        f"# ratelimitd with Redis {args.delay * 1000:g} ms further away ({doc['when']})",
        "",
        f"Redis behind a proxy delaying every reply by {args.delay * 1000:g} ms (PING through it: p50 "
        f"{rtt:.2f} ms, direct {direct:.2f} ms); medians of {args.rounds} rounds.",
        "",
        "| variant | decided/s at 128 in flight | p99 ms | requests per store call | failure-mode answers |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        size = row["requests_per_store_call_at_128"]
        lines.append(
            f"| {row['variant']} | {row['decided_per_s_at_128']:.0f} | {row['p99_ms_at_128']:.2f} | "
            f"{'' if size is None else f'{size:.1f}'} | {row['failure_mode_answers']} |"
        )
    lines += [
        "",
        "| variant | descriptors | rate | p50 ms | p99 ms | p99.9 ms | requests per store call |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in sorted(medians, key=lambda p: (p.descriptors, p.rate, p.variant)):
        size = f"{1 / p.script_calls_per_check:.2f}" if p.script_calls_per_check else ""
        lines.append(
            f"| {p.variant} | {p.descriptors} | {p.rate} | {p.p50_ms:.2f} | {p.p99_ms:.2f} | {p.p999_ms:.2f} | {size} |"
        )
    (RESULTS / "remote_store.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
