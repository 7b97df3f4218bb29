"""Where a check's CPU goes, per kind of thread: the bare aio ceiling (a) against ratelimitd (c).

py-spy sees Python frames; this counts what the kernel charges each thread (CPU time, voluntary and
involuntary context switches, from /proc) over one h2load run, divided by the checks answered. It shows how
much of a check is gRPC's own machinery (its polling thread, its event-engine threads, the loop thread's share
that the bare server pays too) and how much is ratelimitd's (the loop thread's extra, Redis).

    python -m benchmarks.threads [--inflight 128] [--seconds 6] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import psutil

from benchmarks.run import bare_server, h2load, ratelimitd_server, serving
from ratelimitd.store.embedded import EmbeddedRedis

# (thread kind, voluntary switches, involuntary switches, CPU seconds) per thread id
Snapshot = dict[int, tuple[str, int, int, float]]


def kind(pid: int, tid: int, comm: str) -> str:
    if comm.startswith("python"):
        return "loop thread" if tid == pid else "python thread (gRPC poller)"
    return comm


def snapshot(pids: list[int]) -> Snapshot:
    out: Snapshot = {}
    for pid in pids:
        for t in psutil.Process(pid).threads():
            base = f"/proc/{pid}/task/{t.id}"
            try:
                comm = Path(f"{base}/comm").read_text().strip()
                status = Path(f"{base}/status").read_text()
            except OSError:
                continue  # the thread ended
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            out[t.id] = (
                kind(pid, t.id, comm),
                int(fields["voluntary_ctxt_switches"]),
                int(fields["nonvoluntary_ctxt_switches"]),
                t.user_time + t.system_time,
            )
    return out


def per_check(before: Snapshot, after: Snapshot, checks: int) -> dict[str, tuple[float, float, float]]:
    """Per thread kind: (CPU ms, voluntary, involuntary switches) per check."""
    sums: dict[str, list[float]] = {}
    for tid, (k, vol, invol, cpu) in after.items():
        if tid in before:
            s = sums.setdefault(k, [0.0, 0.0, 0.0])
            s[0] += cpu - before[tid][3]
            s[1] += vol - before[tid][1]
            s[2] += invol - before[tid][2]
    return {k: (cpu * 1000 / checks, vol / checks, invol / checks) for k, (cpu, vol, invol) in sums.items() if cpu}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inflight", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    store = EmbeddedRedis().start()
    assert store.proc is not None
    servers = [
        bare_server("a: bare grpc.aio", "aio", args.workers, pin=args.workers > 1),
        ratelimitd_server("c: ratelimitd", store.url, args.workers),
    ]
    try:
        with tempfile.TemporaryDirectory() as tmpdir, serving(servers):
            tmp = Path(tmpdir)
            for r in range(args.rounds):
                for server in servers:
                    assert server.proc is not None
                    h2load(server.port, 8, 1.0, tmp)  # warm-up
                    pids = [p.pid for p in psutil.Process(server.proc.pid).children(recursive=True)]
                    if server.uses_redis:
                        pids.append(store.proc.pid)
                    before = snapshot(pids)
                    checks, _, _ = h2load(server.port, args.inflight, args.seconds, tmp)
                    rows = per_check(before, snapshot(pids), checks)
                    total = sum(cpu for cpu, _, _ in rows.values())
                    rate = checks / args.seconds
                    print(f"round {r + 1} {server.name}: {rate:,.0f} checks/s at {args.inflight} in flight")
                    for k, (cpu, vol, invol) in sorted(rows.items(), key=lambda kv: -kv[1][0]):
                        print(f"  {k:30s} {cpu:6.3f} CPU ms  {vol:5.2f} voluntary  {invol:5.2f} involuntary switches")
                    print(f"  {'all':30s} {total:6.3f} CPU ms per check", flush=True)
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
