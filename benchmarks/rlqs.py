"""How much traffic one ratelimitd CPU second governs: Envoy enforcing a limit through RLQS (it enforces locally
from the shares ratelimitd pushes) against the same limit through the RLS path (one gRPC call per request).

One real Envoy 1.40 per path (`--concurrency 1`), both on one ratelimitd (1 worker) on one embedded Redis,
`benchmarks/config/rlqs/web.yaml` for both: /api at 50,000 requests/s (more than either path reaches here, so
both answer 200 and cheap 429s do not skew the throughput) and /search at 1,000/s (both reach it: how closely each
enforces it). h2load drives one Envoy at a time
(closed loop, 64 streams in flight), in rounds that alternate between the paths; each cell is the median over
the rounds. "Enforced" requests are the ones Envoy answered with the filter's verdict (200 or 429). ratelimitd's
CPU seconds, its Redis script calls and all Redis commands (the scripts' own commands included, and the
stored-limits poll and the console's statistics) are counted over the same seconds. Writes
benchmarks/results/rlqs.json and .md.

    python -m benchmarks.rlqs [--seconds S] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import redis

from benchmarks.run import RESULTS, ROOT, Server, tree_cpu, wait_port
from ratelimitd.store.embedded import EmbeddedRedis, free_port

CONFIG = ROOT / "benchmarks" / "config" / "rlqs"
ENVOY_CONFIGS = {
    "rlqs": ROOT / "examples" / "envoy" / "rlqs" / "envoy-rlqs.yaml",
    "rls": CONFIG / "envoy-rls.yaml",
}
STREAMS = 64


@dataclass
class Run:
    route: str  # api or search
    path: str
    enforced_per_s: float  # 200 + 429 answered by Envoy, per second
    allowed_per_s: float
    denied_per_s: float
    ratelimitd_cpu_s: float
    envoy_cpu_s: float
    redis_commands: int
    script_calls: int
    seconds: float
    envoy_rls_errors: int = 0  # RLS calls that failed or timed out (Envoy then allows: not enforced)
    other_answers: int = 0  # neither 200 nor 429 (h2load's unfinished requests at the end, errors)

    @property
    def per_cpu_second(self) -> float:
        """Enforced requests per ratelimitd CPU second: the headline."""
        return self.enforced_per_s * self.seconds / max(self.ratelimitd_cpu_s, 1e-9)


def envoy_binary() -> str:
    for c in (
        ROOT / ".envoy-venv" / "bin" / "envoy",
        *sorted(ROOT.glob(".envoy-venv/lib/python*/site-packages/envoy/_bin/envoy")),
    ):
        if c.exists():
            return str(c)
    raise SystemExit("Envoy is missing: `make bench-rlqs` installs it into .envoy-venv")


def start_envoy(path: str, rls_port: int, tmp: Path) -> tuple[Server, int, int]:
    edge, upstream, admin = free_port(), free_port(), free_port()
    text = ENVOY_CONFIGS[path].read_text()
    for old, new in (("10010", edge), ("10011", upstream), ("9911", admin), ("8081", rls_port)):
        text = text.replace(f"port_value: {old}", f"port_value: {new}")
    text = text.replace("value: envoy-1", f"value: bench-{path}")
    cfg = tmp / f"envoy-{path}.yaml"
    cfg.write_text(text)
    cmd = [envoy_binary(), "-c", str(cfg), "--concurrency", "1", "--disable-hot-restart", "--log-level", "error"]
    server = Server(f"envoy-{path}", cmd, edge)
    server.start()
    wait_port(admin)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1).read()
            return server, edge, admin
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def rls_errors(admin: int) -> int:
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats?filter=ratelimit", timeout=5).read().decode()
    return sum(int(n) for n in re.findall(r"ratelimit\.(?:error|failure_mode_allowed): (\d+)", text))


def h2load(port: int, route: str, seconds: float, tmp: Path) -> tuple[int, int, int]:
    """(200s, 429s, other answers) for /<route>/x over `seconds`, from h2load's per-request log."""
    log = tmp / "h2load.log"
    log.unlink(missing_ok=True)
    cmd = ["h2load", "-t", "1", "-c", "4", "-m", str(STREAMS // 4), "-D", str(round(seconds)), f"--log-file={log}"]
    subprocess.run([*cmd, f"http://127.0.0.1:{port}/{route}/x"], capture_output=True, timeout=seconds + 60, check=True)
    codes = Counter(line.split("\t")[1] for line in log.read_text().splitlines() if line.count("\t") >= 2)
    return codes.pop("200", 0), codes.pop("429", 0), sum(codes.values())


def commands(client: redis.Redis) -> tuple[int, int]:
    """(script calls, all commands) so far; all commands count the ones scripts run too."""
    stats = client.info("commandstats")
    scripts = sum(int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
    return scripts, int(client.info("stats")["total_commands_processed"])


def measure(
    route: str,
    path: str,
    envoy: tuple[Server, int, int],
    svc: Server,
    client: redis.Redis,
    seconds: float,
    tmp: Path,
) -> Run:
    server, edge, admin = envoy
    assert server.proc is not None and svc.proc is not None
    cpu0, envoy0, err0 = tree_cpu(svc.proc.pid), tree_cpu(server.proc.pid), rls_errors(admin)
    scripts0, cmd0 = commands(client)
    start = time.monotonic()
    allowed, denied, other = h2load(edge, route, seconds, tmp)
    took = time.monotonic() - start
    cpu, envoy_cpu = tree_cpu(svc.proc.pid) - cpu0, tree_cpu(server.proc.pid) - envoy0
    scripts, cmd = commands(client)
    return Run(
        route,
        path,
        (allowed + denied) / took,
        allowed / took,
        denied / took,
        round(cpu, 3),
        round(envoy_cpu, 3),
        cmd - cmd0 - 2,  # the two INFO calls
        scripts - scripts0,
        round(took, 2),
        rls_errors(admin) - err0,
        other,
    )


def median_run(runs: list[Run]) -> Run:
    first = runs[0]

    def med(name: str) -> float:
        return float(statistics.median(getattr(r, name) for r in runs))

    return Run(
        first.route,
        first.path,
        med("enforced_per_s"),
        med("allowed_per_s"),
        med("denied_per_s"),
        med("ratelimitd_cpu_s"),
        med("envoy_cpu_s"),
        int(med("redis_commands")),
        int(med("script_calls")),
        med("seconds"),
        int(med("envoy_rls_errors")),
        int(med("other_answers")),
    )


def report(runs: dict[tuple[str, str], list[Run]], seconds: float, rounds: int) -> str:
    lines = [
        "# RLQS against RLS: traffic governed per ratelimitd CPU second",
        "",
        f"One Envoy 1.40 per path (`--concurrency 1`), one ratelimitd worker, one Redis; /api limited to 50,000 "
        f"requests/s (neither path reaches it), /search to 1,000/s; h2load {STREAMS} streams in flight, {rounds} "
        f"alternating round(s) of {seconds:g} s, medians (a run touches one window more than its seconds, so "
        "allowed/s on /search can exceed 1,000 by up to one window's worth divided by the run). Enforced = "
        "answered 200 or 429 by Envoy's filter. Machine: 2 cores shared by Envoy, h2load, ratelimitd and Redis.",
        "",
        "| route | path | enforced req/s | allowed/s | denied/s | ratelimitd CPU s per 1,000 enforced | Redis script "
        "calls per 1,000 | Redis commands per 1,000 | **enforced requests per ratelimitd CPU second** | Envoy CPU s "
        "| RLS errors | other answers |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (route, path), rs in runs.items():
        r = median_run(rs)
        n = r.enforced_per_s * r.seconds
        lines.append(
            f"| /{route} | {path.upper()} | {r.enforced_per_s:,.0f} | {r.allowed_per_s:,.0f} | {r.denied_per_s:,.0f} | "
            f"{1000 * r.ratelimitd_cpu_s / n:.4f} | {1000 * r.script_calls / n:.2f} | "
            f"{1000 * r.redis_commands / n:.2f} | **{r.per_cpu_second:,.0f}** | "
            f"{r.envoy_cpu_s:.2f} | {r.envoy_rls_errors} | {r.other_answers} |"
        )
    q, s = median_run(runs["api", "rlqs"]), median_run(runs["api", "rls"])
    limited = median_run(runs["search", "rlqs"]), median_run(runs["search", "rls"])
    lines += [
        "",
        f"/api: RLQS governs {q.per_cpu_second / s.per_cpu_second:,.0f}x the traffic per ratelimitd CPU second, and "
        f"Envoy enforces {q.enforced_per_s / s.enforced_per_s:.2f}x the requests per second on this machine. Under "
        "RLQS ratelimitd's CPU is mostly its fixed background work (stored-limits poll, statistics, one share "
        "refresh per bucket per second), not the traffic. /search (1,000/s): allowed "
        f"{limited[0].allowed_per_s:,.0f}/s under RLQS, {limited[1].allowed_per_s:,.0f}/s under RLS.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    store = EmbeddedRedis().start()
    client = redis.Redis.from_url(store.url)
    grpc_port, http_port = free_port(), free_port()
    svc = Server(
        "ratelimitd",
        [
            *(sys.executable, "-m", "ratelimitd", "serve", "--config", str(CONFIG / "web.yaml")),
            *("--redis-url", store.url, "--workers", "1", "--log-level", "warning"),
            *("--grpc-listen", f"127.0.0.1:{grpc_port}", "--http-listen", f"127.0.0.1:{http_port}"),
        ],
        grpc_port,
        http_port,
    )
    envoys: list[Server] = []
    runs: dict[tuple[str, str], list[Run]] = {(r, p): [] for r in ("api", "search") for p in ("rlqs", "rls")}
    try:
        svc.start()
        wait_port(grpc_port)
        with tempfile.TemporaryDirectory() as tmp:
            started = {p: start_envoy(p, grpc_port, Path(tmp)) for p in ("rlqs", "rls")}
            envoys = [e for e, _, _ in started.values()]
            for _, edge, _ in started.values():  # warm up: the RLQS buckets get their assignments
                for route in ("api", "search"):
                    h2load(edge, route, 2, Path(tmp))
            time.sleep(1)
            for i in range(args.rounds):
                for route, path in runs if i % 2 == 0 else reversed(list(runs)):
                    run = measure(route, path, started[path], svc, client, args.seconds, Path(tmp))
                    runs[route, path].append(run)
                    print(f"round {i + 1}: {run}", flush=True)
    finally:
        for e in envoys:
            e.stop()
        svc.stop()
        store.close()
    text = report(runs, args.seconds, args.rounds)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "rlqs.md").write_text(text)
    out = [asdict(r) | {"per_cpu_second": r.per_cpu_second} for rs in runs.values() for r in rs]
    (RESULTS / "rlqs.json").write_text(json.dumps(out, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
