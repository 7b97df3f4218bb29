"""Side-by-side throughput and latency of Envoy RLS ShouldRateLimit servers, measured in one run.

(a) bare Python gRPC servers (the ceiling), (b) ratelimitd with its fast path off (one Redis call per
request, no local cache), (c) ratelimitd as shipped, (d) the `limits` library in-process. One load
generator for all: h2load (C, pre-encoded gRPC frames), several request bodies in parallel so several key
sets are hit. All servers start once; each in-flight level is measured in rounds that alternate between the
variants, and every cell reports the median over the rounds. Then the same servers at steady request rates
(open loop, `latency.py`): 500 and 2,000 checks/s and half the fastest bare server's saturation rate, with 1
and 3 descriptors per request. Writes benchmarks/results/<mode>.json, .md, .png.

    python -m benchmarks.run [--quick] [--only abcd] [--inflight 1,8,128] [--seconds S] [--rounds R]
                             [--latency-only] [--rates 500,2000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2

from benchmarks import latency
from ratelimitd.store.embedded import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def bodies() -> list[bytes]:
    """A realistic mix: 1-3 descriptors per request, many under their limits, one always over."""

    def req(*descs: list[tuple[str, str]]) -> bytes:
        msg = rls_pb2.RateLimitRequest(domain="bench")
        for entries in descs:
            msg.descriptors.append(
                ratelimit_pb2.RateLimitDescriptor(
                    entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries]
                )
            )
        data: bytes = msg.SerializeToString()
        return b"\x00" + struct.pack(">I", len(data)) + data

    return [
        req([("api_key", "key-1")]),
        req([("remote_address", "10.0.0.2"), ("path", "/search")], [("api_key", "key-2")]),
        req([("tenant", "t-3")], [("api_key", "key-3")], [("remote_address", "10.0.0.3"), ("path", "/a")]),
        req([("api_key", "key-4")], [("abuser", "10.6.6.6")]),
    ]


@dataclass
class Point:
    variant: str
    inflight: int
    checks_per_s: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    errors: int
    failure_mode: int = 0  # answered by --failure-mode because Redis did not answer within --store-timeout
    decided_per_s: float = 0.0  # answers that were real store decisions
    script_calls_per_check: float | None = None
    socket_reads_per_check: float | None = None
    cpu_s_per_1000: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def h2load(port: int, inflight: int, seconds: float, tmp: Path) -> tuple[int, list[float], int]:
    """Run h2load processes in parallel (one per body); return (requests, latencies ms, non-200)."""
    bs = bodies()
    procs_n = min(len(bs), inflight)
    per = [inflight // procs_n + (1 if i < inflight % procs_n else 0) for i in range(procs_n)]
    procs = []
    for i in range(procs_n):
        body = tmp / f"body{i}.bin"
        body.write_bytes(bs[i])
        log = tmp / f"h2load{i}.log"
        log.unlink(missing_ok=True)
        streams = per[i]
        clients = 1 if streams <= 16 else max(1, streams // 16)
        cmd = [
            "h2load",
            "-t",
            "1",
            "-c",
            str(clients),
            "-m",
            str(max(1, streams // clients)),
            "-D",
            str(max(1, round(seconds))),
            *latency.grpc_request(port, body, log),
        ]
        procs.append((subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), log))
    latencies: list[float] = []
    non200 = 0
    for proc, log in procs:
        out, _ = proc.communicate(timeout=seconds + 60)
        if proc.returncode != 0:
            raise RuntimeError(f"h2load failed: {out[-2000:]}")
        lat, errors = latency.read_log(log)
        latencies += lat
        non200 += errors
    return len(latencies), sorted(latencies), non200


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


def tree_cpu(pid: int) -> float:
    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            t = proc.cpu_times()
            total += t.user + t.system
    except psutil.Error:
        pass
    return total


def redis_counters(client: redis.Redis) -> tuple[int, int]:
    stats = client.info("commandstats")
    scripts = sum(int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
    return scripts, int(client.info("stats")["total_reads_processed"])


def wait_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


def ratelimitd_errors(http_port: int) -> int:
    text = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5).read().decode()
    errs = 0
    for name in ("ratelimitd_failure_mode_decisions_total", "ratelimitd_invalid_requests_total"):
        errs += int(sum(float(m) for m in re.findall(rf"^{name}{{[^}}]*}} (\S+)$", text, re.M)))
    return errs


@dataclass
class Server:
    """One variant's server, started once and kept up while the rounds alternate between variants."""

    name: str
    cmd: list[str]
    port: int
    http_port: int | None = None  # ratelimitd's /metrics, for its own failure-mode count
    uses_redis: bool = False
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


def bare_server(label: str, flavour: str, procs: int, pin: bool = False) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "benchmarks.baseline_server", "--port", str(port), "--flavour", flavour]
    return Server(label, [*cmd, "--procs", str(procs), *(["--pin"] if pin else [])], port)


def ratelimitd_server(label: str, redis_url: str, workers: int, extra: Sequence[str] = ()) -> Server:
    port, http_port = free_port(), free_port()
    config = str(ROOT / "benchmarks" / "config" / "bench.yaml")
    cmd = [sys.executable, "-m", "ratelimitd", "serve", "--config", config, "--redis-url", redis_url]
    cmd += ["--grpc-listen", f"127.0.0.1:{port}", "--http-listen", f"127.0.0.1:{http_port}"]
    cmd += ["--workers", str(workers), "--log-level", "warning", *extra]
    return Server(label, cmd, port, http_port, uses_redis=True)


@contextmanager
def serving(servers: list[Server]) -> Iterator[None]:
    """All servers up and settled for the whole measurement (idle ones use next to no CPU), then stopped."""
    try:
        for server in servers:
            server.start()
        for server in servers:
            wait_port(server.port)
        time.sleep(1.0)
        yield
    finally:
        for server in servers:
            server.stop()


def measure(server: Server, n: int, seconds: float, tmp: Path, rclient: redis.Redis) -> Point:
    assert server.proc is not None
    r0 = redis_counters(rclient) if server.uses_redis else None
    e0 = ratelimitd_errors(server.http_port) if server.http_port else 0
    cpu0 = tree_cpu(server.proc.pid)
    count, lat, non200 = h2load(server.port, n, seconds, tmp)
    cpu = tree_cpu(server.proc.pid) - cpu0
    point = Point(
        server.name,
        n,
        count / seconds,
        pct(lat, 0.5),
        pct(lat, 0.99),
        pct(lat, 0.999),
        non200,
        cpu_s_per_1000=cpu / count * 1000 if count else None,
    )
    if server.http_port:  # the server's own count: h2load counts gRPC errors as successes
        point.failure_mode = ratelimitd_errors(server.http_port) - e0
    point.decided_per_s = (count - point.failure_mode - non200) / seconds
    if r0 is not None and count:
        s1, reads1 = redis_counters(rclient)
        point.script_calls_per_check = (s1 - r0[0]) / count
        point.socket_reads_per_check = (reads1 - r0[1]) / count
    return point


def median_point(runs: list[Point]) -> Point:
    """Each number is the median over the rounds (so one noisy round does not make the table)."""

    def med(values: list[float | None]) -> float | None:
        xs = sorted(v for v in values if v is not None)
        return statistics.median(xs) if xs else None

    first = runs[0]
    out = Point(
        first.variant,
        first.inflight,
        med([r.checks_per_s for r in runs]) or 0.0,
        med([r.p50_ms for r in runs]) or 0.0,
        med([r.p99_ms for r in runs]) or 0.0,
        med([r.p999_ms for r in runs]) or 0.0,
        sum(r.errors for r in runs),
        failure_mode=sum(r.failure_mode for r in runs),
        decided_per_s=med([r.decided_per_s for r in runs]) or 0.0,
        script_calls_per_check=med([r.script_calls_per_check for r in runs]),
        socket_reads_per_check=med([r.socket_reads_per_check for r in runs]),
        cpu_s_per_1000=med([r.cpu_s_per_1000 for r in runs]),
    )
    out.extra["rounds"] = [round(r.decided_per_s) for r in runs]
    return out


def round_ratios(rounds: dict[tuple[str, int], list[Point]], top: int) -> dict[str, float]:
    """c/a and c/b per round (each pair measured minutes apart at most), then the median over rounds."""
    at_top = {name: runs for (name, n), runs in rounds.items() if n == top}
    c = next((runs for name, runs in at_top.items() if name.startswith("c:")), None)
    b = next((runs for name, runs in at_top.items() if name.startswith("b:")), None)
    a_names = [name for name in at_top if name.startswith("a:")]
    out: dict[str, float] = {}
    if c and a_names:
        best_a = [max(at_top[name][r].decided_per_s for name in a_names) for r in range(len(c))]
        out["c_over_a_median_of_rounds"] = statistics.median(
            c[r].decided_per_s / best_a[r] for r in range(len(c)) if best_a[r]
        )
    if c and b:
        out["c_over_b_median_of_rounds"] = statistics.median(
            c[r].decided_per_s / b[r].decided_per_s for r in range(len(c)) if b[r].decided_per_s
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--only", default="abcd", help="which variants to run, e.g. 'ac' ('e': c with the opt-in linger)")
    ap.add_argument("--inflight", default="", help="comma-separated in-flight levels instead of the mode's")
    ap.add_argument("--seconds", type=float, default=0.0, help="seconds per point instead of the mode's")
    ap.add_argument("--rounds", type=int, default=0, help="rounds per point instead of the mode's")
    ap.add_argument("--latency-only", action="store_true", help="only the steady-rate latency table")
    ap.add_argument("--rates", default="", help="comma-separated steady rates instead of 500, 2000 and half")
    args = ap.parse_args()
    if not shutil.which("h2load"):
        print("h2load not found: `make bench` installs Debian's nghttp2-client", file=sys.stderr)
        return 1
    inflights = [1, 8, 128] if args.quick else [1, 8, 32, 128, 256]
    if args.inflight:
        inflights = [int(n) for n in args.inflight.split(",")]
    seconds = args.seconds or (3.0 if args.quick else 5.0)
    rounds_n = args.rounds or (2 if args.quick else 3)
    mode = "quick" if args.quick else "full"
    w = args.workers
    store = EmbeddedRedis().start()
    rclient = redis.Redis.from_url(store.url)
    # ratelimitd pins its workers to CPUs by default (--cpu-affinity auto), so the ceiling must be measured
    # pinned too; quick mode keeps only the pinned ones, the fastest in every full run so far (one worker is
    # never pinned, so there quick mode keeps the unpinned ones).
    pinned = [("aio", w, True), ("sync", w, True)] if w > 1 else []
    flavours = pinned or [("aio", w, False), ("sync", w, False)]
    if not args.quick:
        flavours = [("aio", 1, False), ("aio", w, False), ("sync", 1, False), ("sync", w, False), *pinned]
    servers: list[Server] = []
    if "a" in args.only:
        for flavour, procs, pin in flavours:
            label = f"a: bare {'grpc.aio' if flavour == 'aio' else 'sync grpc'} x{procs}{' pinned' if pin else ''}"
            servers.append(bare_server(label, flavour, procs, pin))
    for label, extra in (
        (f"b: ratelimitd fast path off x{w}", ["--max-batch", "1", "--local-cache-size", "0"]),
        (f"c: ratelimitd x{w}", []),
        (f"e: ratelimitd --batch-linger 0.005 x{w}", ["--batch-linger", "0.005"]),  # only with --only ...e
    ):
        if label[0] in args.only:
            servers.append(ratelimitd_server(label, store.url, w, extra))
    rounds: dict[tuple[str, int], list[Point]] = {}
    points: list[Point] = []
    headline_extra: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        with serving(servers):
            for server in servers:
                h2load(server.port, 8, 1.0, tmp)  # warm-up: connections, scripts, caches
            if args.latency_only:
                inflights = []
            # Rounds alternate between the variants, so each ratio compares runs minutes apart at most on a
            # machine whose speed drifts; idle servers use next to no CPU while another variant is measured.
            for n in inflights:
                for r in range(rounds_n):
                    for server in servers:
                        point = measure(server, n, seconds, tmp, rclient)
                        rounds.setdefault((server.name, n), []).append(point)
                        print(
                            f"  round {r + 1} {server.name:30s} inflight={n:4d} {point.decided_per_s:7.0f} decided/s "
                            f"p50={point.p50_ms:.2f}ms p99={point.p99_ms:.2f}ms "
                            f"calls/check={point.script_calls_per_check}",
                            flush=True,
                        )
            points = [median_point(runs) for runs in rounds.values()]
            if inflights:
                top = 128 if 128 in inflights else max(inflights)
                headline_extra = round_ratios(rounds, top)
            rates = [int(r) for r in args.rates.split(",")] if args.rates else [500, 2000]
            if not args.rates:
                ceiling = max((p.decided_per_s for p in points if p.variant.startswith("a:")), default=0.0)
                if not ceiling:  # --latency-only: the fastest bare server's saturation, measured now
                    ceiling = max(
                        measure(s_, 128, 2.0, tmp, rclient).decided_per_s for s_ in servers if s_.name[0] == "a"
                    )
                rates.append(round(ceiling / 2 / 100) * 100)
            lat_rounds = steady_rates(servers, rates, seconds, rounds_n, tmp, rclient)
        try:
            from benchmarks.limits_inprocess import measure as measure_limits

            d = measure_limits(store.url, seconds) if "d" in args.only else None
            if d is not None:
                points.append(
                    Point(
                        "d: limits in-process x1",
                        1,
                        d["checks_per_s"],
                        d["p50_ms"],
                        d["p99_ms"],
                        d["p999_ms"],
                        0,
                        decided_per_s=d["checks_per_s"],
                    )
                )
                print(f"  d: limits in-process {d['checks_per_s']:9.0f}/s p50={d['p50_ms']:.2f}ms", flush=True)
        finally:
            store.close()
    partial = args.only != "abcd" or args.inflight or args.seconds or args.rounds or args.latency_only or args.rates
    report(points, f"{mode}-{args.only}" if partial else mode, w, headline_extra, rounds_n, lat_rounds)
    return 0


def steady_rates(
    servers: list[Server], rates: list[int], seconds: float, rounds_n: int, tmp: Path, rclient: redis.Redis
) -> dict[tuple[str, int, int], list[latency.LatencyPoint]]:
    """Each variant at each steady rate, 1 and 3 descriptors per request, rounds alternating variants."""
    sets = {1: bodies()[0], 3: bodies()[2]}
    out: dict[tuple[str, int, int], list[latency.LatencyPoint]] = {}
    for descriptors, data in sets.items():
        body = tmp / f"latency-{descriptors}.bin"
        body.write_bytes(data)
        for rate in rates:
            for r in range(rounds_n):
                for server in servers:
                    r0 = redis_counters(rclient)[0] if server.uses_redis else None
                    point = latency.measure(server.name, descriptors, server.port, rate, seconds, body, tmp)
                    if r0 is not None:  # h2load's warm-up second is counted too: a close estimate
                        point.script_calls_per_check = (redis_counters(rclient)[0] - r0) / max(
                            1.0, point.achieved * (seconds + 1)
                        )
                    out.setdefault((server.name, descriptors, rate), []).append(point)
                    print(
                        f"  round {r + 1} {server.name:30s} {descriptors} descriptor(s) at {rate:6d}/s: "
                        f"{point.achieved:7.0f}/s p50={point.p50_ms:.2f}ms p99={point.p99_ms:.2f}ms "
                        f"p99.9={point.p999_ms:.2f}ms",
                        flush=True,
                    )
    return out


def best(points: list[Point], prefix: str, inflight: int) -> Point | None:
    cands = [p for p in points if p.variant.startswith(prefix) and p.inflight == inflight]
    return max(cands, key=lambda p: p.decided_per_s) if cands else None


def report(
    points: list[Point],
    mode: str,
    workers: int,
    extra: dict[str, float],
    rounds: int,
    lat_rounds: dict[tuple[str, int, int], list[latency.LatencyPoint]],
) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    inflights = {p.inflight for p in points} or {0}
    top = 128 if 128 in inflights else max(inflights)  # the saturation figures are stated at 128 in flight
    a, b, c, d = (best(points, x, top) for x in ("a:", "b:", "c:", "d:"))
    if d is None:
        d = next((p for p in points if p.variant.startswith("d:")), None)
    headline: dict[str, Any] = {"inflight": top, "workers": workers, "rounds": rounds, **extra}
    if a and c:
        headline["c_over_a"] = c.decided_per_s / a.decided_per_s
    if b and c:
        headline["c_over_b"] = c.decided_per_s / b.decided_per_s
    if c and d:
        headline["c_over_d"] = c.decided_per_s / d.decided_per_s
    if c:
        headline["c_script_calls_per_check"] = c.script_calls_per_check
    c1, c8 = best(points, "c:", 1), best(points, "c:", 8)
    if c1:
        headline["c_p50_ms_inflight_1"] = c1.p50_ms
    if c8:
        headline["c_p99_ms_inflight_8"] = c8.p99_ms
    steady = [latency.median(runs) for runs in lat_rounds.values()]
    added = latency.added(lat_rounds)
    doc = {
        "mode": mode,
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "headline": headline,
        "points": [asdict(p) for p in points],
        "steady_rate": [asdict(p) for p in steady],
        "added_latency": added,
    }
    (RESULTS / f"{mode}.json").write_text(json.dumps(doc, indent=2))
    lines = [
        f"# Benchmark ({mode}, {os.cpu_count()} CPUs, {doc['when']})",
        "",
        f"Each row: the median over {rounds} rounds; the rounds alternate between the variants (all servers up, one"
        " loaded at a time). Failure-mode answers and errors are totals over the rounds.",
        "",
        "| variant | in flight | answers/s | decided/s | p50 ms | p99 ms | p99.9 ms | script calls/check "
        "| socket reads/check | CPU s/1000 | failure-mode answers | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f(x: float | None, spec: str) -> str:
        return "" if x is None else format(x, spec)

    for p in points:
        lines.append(
            f"| {p.variant} | {p.inflight} | {p.checks_per_s:.0f} | {p.decided_per_s:.0f} | {p.p50_ms:.2f} | "
            f"{p.p99_ms:.2f} | {p.p999_ms:.2f} | {f(p.script_calls_per_check, '.3f')} | "
            f"{f(p.socket_reads_per_check, '.3f')} | {f(p.cpu_s_per_1000, '.3f')} | {p.failure_mode} | {p.errors} |"
        )
    lines += [
        "",
        "Headline (128 in flight; ratios of decided checks/s, from the median rows and as the median of per-round"
        " ratios): "
        + ", ".join(f"{k} = {v:.3f}" if isinstance(v, float) else f"{k} = {v}" for k, v in headline.items()),
    ]
    lines += latency_lines(steady, added, rounds)
    (RESULTS / f"{mode}.md").write_text("\n".join(lines) + "\n")
    plot(points, steady, RESULTS / f"{mode}.png")
    print("\n".join(lines))


def latency_lines(steady: list[latency.LatencyPoint], added: list[dict[str, Any]], rounds: int) -> list[str]:
    if not steady:
        return []
    lines = [
        "",
        f"## Latency at steady rates (open loop, 8 connections; medians of {rounds} rounds; every request's time)",
        "",
        "| variant | descriptors | rate asked | answered/s | p50 ms | p99 ms | p99.9 ms | script calls/check "
        "| errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in sorted(steady, key=lambda p: (p.descriptors, p.rate, p.variant)):
        calls = "" if p.script_calls_per_check is None else f"{p.script_calls_per_check:.3f}"
        lines.append(
            f"| {p.variant} | {p.descriptors} | {p.rate} | {p.achieved:.0f} | {p.p50_ms:.2f} | {p.p99_ms:.2f} "
            f"| {p.p999_ms:.2f} | {calls} | {p.errors} |"
        )
    lines += [
        "",
        "Added latency: ratelimitd minus the fastest bare server at the same rate, per round, then the median.",
        "",
        "| variant | descriptors | rate | added p50 ms | added p99 ms |",
        "|---|---|---|---|---|",
    ]
    for row in sorted(added, key=lambda r: (r["variant"], r["descriptors"], r["rate"])):
        lines.append(
            f"| {row['variant']} | {row['descriptors']} | {row['rate']} | {row['added_p50_ms']:+.2f} | "
            f"{row['added_p99_ms']:+.2f} |"
        )
    return lines


def plot(points: list[Point], steady: list[latency.LatencyPoint], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(18, 4.5))
    for variant in sorted({p.variant for p in steady}):
        at = sorted((p for p in steady if p.variant == variant and p.descriptors == 1), key=lambda p: p.rate)
        ax3.plot([p.rate for p in at], [p.p99_ms for p in at], marker="o", label=f"{variant} p99")
        ax3.plot([p.rate for p in at], [p.p50_ms for p in at], marker=".", linestyle=":", label=f"{variant} p50")
    ax3.set_xscale("log")
    ax3.set_yscale("log")
    ax3.set_xlabel("steady rate (checks/s), 1 descriptor")
    ax3.set_title("latency at steady rates (ms)")
    ax3.grid(True, alpha=0.3)
    ax3.legend(fontsize=6)
    for variant in sorted({p.variant for p in points}):
        ps = sorted((p for p in points if p.variant == variant), key=lambda p: p.inflight)
        if len(ps) < 2:
            continue
        xs = [p.inflight for p in ps]
        ax1.plot(xs, [p.decided_per_s for p in ps], marker="o", label=variant)
        ax2.plot(xs, [p.p99_ms for p in ps], marker="o", label=variant)
    for ax, title in ((ax1, "decided checks/s"), (ax2, "p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("requests in flight")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    ax2.set_yscale("log")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
