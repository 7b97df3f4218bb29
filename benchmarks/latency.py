"""What a gateway waits for at the load it really sends: latency at a steady request rate (open loop).

h2load sends at a fixed rate (`--rps` per connection, 8 connections) whatever the answers' speed, and logs
every request's time (`--log-file`), so p50/p99/p99.9 come from all requests, not from h2load's mean. Each
rate is measured for every variant in rounds that alternate between them, and each cell is the median over
the rounds; "added" is ratelimitd minus the fastest bare server at the same rate in the same round.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

CONNECTIONS = 8
PATH = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"


@dataclass
class LatencyPoint:
    variant: str
    descriptors: int
    rate: int  # the rate asked for
    achieved: float  # answers per second actually received
    p50_ms: float
    p99_ms: float
    p999_ms: float
    errors: int
    script_calls_per_check: float | None = None  # reported, not targeted: Redis runs ~60,000 calls/s here
    rounds: list[tuple[float, float]] = field(default_factory=list)  # (p50, p99) of each round


def percentile(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


def grpc_request(port: int, body: Path, log: Path) -> list[str]:
    """h2load's arguments for one gRPC ShouldRateLimit call with a pre-encoded body, every request logged."""
    return [
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        "-d",
        str(body),
        f"--log-file={log}",
        f"http://127.0.0.1:{port}{PATH}",
    ]


def read_log(log: Path) -> tuple[list[float], int]:
    """Latencies (ms) and non-200 answers from an h2load --log-file."""
    latencies: list[float] = []
    errors = 0
    for line in log.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            latencies.append(int(parts[2]) / 1000)
            errors += parts[1] != "200"
    return latencies, errors


def open_loop(port: int, rate: int, seconds: float, body: Path, log: Path) -> tuple[list[float], int]:
    """Every request's latency (ms, sorted) at `rate` requests/s spread over 8 connections, and the non-200s."""
    per_connection = max(1, round(rate / CONNECTIONS))
    log.unlink(missing_ok=True)
    cmd = [
        "h2load",
        "-t",
        "1",
        "-c",
        str(CONNECTIONS),
        "-m",
        "64",  # room for a backlog: a slow server gets more requests in flight, as from a real gateway
        f"--rps={per_connection}",
        "-D",
        str(max(1, round(seconds))),
        "--warm-up-time=1",
        *grpc_request(port, body, log),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"h2load failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    latencies, errors = read_log(log)
    return sorted(latencies), errors


def measure(name: str, descriptors: int, port: int, rate: int, seconds: float, body: Path, tmp: Path) -> LatencyPoint:
    started = time.monotonic()
    lat, errors = open_loop(port, rate, seconds, body, tmp / "latency.log")
    elapsed = max(seconds, time.monotonic() - started - 1.0)
    return LatencyPoint(
        name,
        descriptors,
        rate,
        len(lat) / elapsed,
        percentile(lat, 0.5),
        percentile(lat, 0.99),
        percentile(lat, 0.999),
        errors,
    )


def median(points: list[LatencyPoint]) -> LatencyPoint:
    first = points[0]
    out = LatencyPoint(
        first.variant,
        first.descriptors,
        first.rate,
        statistics.median(p.achieved for p in points),
        statistics.median(p.p50_ms for p in points),
        statistics.median(p.p99_ms for p in points),
        statistics.median(p.p999_ms for p in points),
        sum(p.errors for p in points),
        statistics.median(calls)
        if (calls := [p.script_calls_per_check for p in points if p.script_calls_per_check])
        else None,
    )
    out.rounds = [(round(p.p50_ms, 3), round(p.p99_ms, 3)) for p in points]
    return out


def _median_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def added(rounds: dict[tuple[str, int, int], list[LatencyPoint]]) -> list[dict[str, float | int | str]]:
    """Per (ratelimitd variant, descriptors, rate): the median over rounds of its p50 and p99 minus the fastest
    bare server's in the same round."""
    rows: list[dict[str, float | int | str]] = []
    for (name, descriptors, rate), runs in rounds.items():
        if name.startswith("a:"):
            continue
        bare = [runs_a for (n, d, r), runs_a in rounds.items() if n.startswith("a:") and d == descriptors and r == rate]
        if not bare:
            continue
        d50, d99 = [], []
        for i, p in enumerate(runs):
            best = min((b[i] for b in bare if i < len(b)), key=lambda b: b.p50_ms)
            d50.append(p.p50_ms - best.p50_ms)
            d99.append(p.p99_ms - min(b[i].p99_ms for b in bare if i < len(b)))
        rows.append(
            {
                "variant": name,
                "descriptors": descriptors,
                "rate": rate,
                "added_p50_ms": statistics.median(d50),
                "added_p99_ms": statistics.median(d99),
            }
        )
    return rows
