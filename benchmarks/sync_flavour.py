"""Would ratelimitd be faster behind the sync gRPC server? Two prototypes, measured against the shipped service.

The bare sync server pinned to CPUs is the fastest ceiling in `make bench`, so this asks whether ratelimitd's
engine behind it beats the shipped aio service. Both prototypes run the real engine, request decoding,
response encoding and batch script against real Redis (standalone only, no failure-mode deadline, no admin,
HTTP or health: not a product), in the sync server's handler threads:

- bridge: each check is handed to an event-loop thread running the shipped coalescer and store client
  (a deque plus a lock per check; the loop is woken only when no wake-up is pending).
- direct: leader/follower group commit on one blocking socket per process: the first thread to find the
  store idle sends everything queued as one script call and answers the others; a thread arriving meanwhile
  waits on its own lock. No event loop on the hot path.

The engine's coroutine is driven by hand (`send(None)`): its only await is the store, which here blocks the
calling thread and never yields. Rounds alternate between the variants (same method as benchmarks/run.py).
Writes benchmarks/results/sync_flavour.md.

    python -m benchmarks.sync_flavour [--inflight 8,128] [--seconds 4] [--rounds 3]
    python -m benchmarks.sync_flavour serve --port P --redis-url URL --mode bridge|direct [--procs 2]
"""

from __future__ import annotations

import _thread
import argparse
import asyncio
import collections
import functools
import os
import socket
import statistics
import sys
import tempfile
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import grpc
import hiredis
import redis
from envoy.service.ratelimit.v3 import rls_pb2

from benchmarks.baseline_server import run_processes, serve_sync
from benchmarks.run import RESULTS, ROOT, Point, Server, bare_server, h2load, measure, ratelimitd_server, serving
from ratelimitd.api.envoy_rls import decode, encode
from ratelimitd.config.holder import ConfigHolder
from ratelimitd.config.loader import load_config
from ratelimitd.engine.decision import Decision
from ratelimitd.engine.engine import Engine, EngineOptions
from ratelimitd.engine.local_cache import OverLimitCache
from ratelimitd.metrics import Metrics
from ratelimitd.scheduler.coalescer import Answer, Coalescer
from ratelimitd.store.checks import CheckBatch
from ratelimitd.store.connect import connect
from ratelimitd.store.embedded import EmbeddedRedis, free_port
from ratelimitd.store.keys import KeyEncoder
from ratelimitd.store.redis_store import decode_batch
from ratelimitd.store.resp import pack_evalsha
from ratelimitd.store.scripts import batch_script

CONFIG = ROOT / "benchmarks" / "config" / "bench.yaml"
THREADS = 64  # handler threads per process: 32 gave 15-25% fewer checks/s at 128 in flight


class _Cell:
    """One check waiting for its answer: its lock is held until the answer (or leadership) is handed over."""

    __slots__ = ("answer", "error", "lead", "lock")

    def __init__(self) -> None:
        self.lock = _thread.allocate_lock()
        self.lock.acquire()
        self.answer: Answer | None = None
        self.error: BaseException | None = None
        self.lead = False

    def result(self) -> Answer:
        if self.error is not None:
            raise self.error
        assert self.answer is not None
        return self.answer


class Bridge:
    """Checks go to the shipped coalescer on an event-loop thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, coalescer: Coalescer) -> None:
        self.loop, self.coalescer = loop, coalescer
        self.queue: collections.deque[tuple[CheckBatch, _Cell]] = collections.deque()
        self.armed = False

    async def submit(self, checks: CheckBatch) -> Answer:
        cell = _Cell()
        self.queue.append((checks, cell))
        if not self.armed:
            self.armed = True
            self.loop.call_soon_threadsafe(self._pump)
        cell.lock.acquire()
        return cell.result()

    def _pump(self) -> None:
        self.armed = False
        while self.queue:
            checks, cell = self.queue.popleft()
            try:
                fut = self.coalescer.enqueue(checks)
            except Exception as err:
                cell.error = err
                cell.lock.release()
                continue
            fut.add_done_callback(functools.partial(self._deliver, cell))

    @staticmethod
    def _deliver(cell: _Cell, fut: asyncio.Future[Answer]) -> None:
        cell.error = fut.exception()
        if cell.error is None:
            cell.answer = fut.result()
        cell.lock.release()


class Direct:
    """Leader/follower group commit on one blocking socket."""

    def __init__(self, url: str, max_batch: int = 128) -> None:
        text = batch_script()
        self.sha = redis.Redis.from_url(url).script_load(text)
        u = urlparse(url)
        self.sock = socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = hiredis.Reader()
        self.mu = threading.Lock()
        self.queue: list[tuple[CheckBatch, _Cell]] = []
        self.busy = False
        self.max_batch = max_batch

    def _call(self, requests: list[CheckBatch]) -> list[Answer]:
        self.sock.sendall(pack_evalsha(self.sha, requests, None))
        while (reply := self.reader.gets()) is False:
            self.reader.feed(self.sock.recv(65536))
        result = decode_batch(reply, requests)
        return [(result.now_us, seq, row) for seq, row in enumerate(result.results)]

    async def submit(self, checks: CheckBatch) -> Answer:
        cell = _Cell()
        with self.mu:
            self.queue.append((checks, cell))
            lead = not self.busy
            self.busy = True
        if not lead:
            cell.lock.acquire()
            if not cell.lead:
                return cell.result()
        with self.mu:
            batch = self.queue[: self.max_batch]
            del self.queue[: self.max_batch]
        try:
            for (_, c), answer in zip(batch, self._call([checks for checks, _ in batch]), strict=True):
                c.answer = answer
        except Exception as err:
            for _, c in batch:
                c.error = err
        with self.mu:
            successor = self.queue[0][1] if self.queue else None
            self.busy = successor is not None
            if successor is not None:
                successor.lead = True
        for _, c in batch:
            if c is not cell:
                c.lock.release()
        if successor is not None:
            successor.lock.release()
        return cell.result()


def _run_now(coro: Coroutine[Any, Any, Decision]) -> Decision:
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("the engine waited on something other than the store")


def serve_process(port: int, url: str, mode: str, errors_dir: str) -> None:
    import uvloop

    metrics = Metrics()
    holder = ConfigHolder(load_config(str(CONFIG)))
    submit: Any
    if mode == "bridge":
        loop = uvloop.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()

        async def build() -> Coalescer:
            return Coalescer(connect(url, timeout=0.05).evaluate, metrics=metrics)

        submit = Bridge(loop, asyncio.run_coroutine_threadsafe(build(), loop).result()).submit
    else:
        submit = Direct(url).submit
    engine = Engine(holder, submit, KeyEncoder("rl:", False), EngineOptions(), metrics, OverLimitCache(100_000))
    errors = 0

    def should_rate_limit(msg: rls_pb2.RateLimitRequest, context: grpc.ServicerContext) -> rls_pb2.RateLimitResponse:
        nonlocal errors
        try:
            return encode(_run_now(engine.check(decode(msg))))
        except Exception:
            errors += 1  # h2load counts gRPC errors as answers: the driver adds these up
            raise

    serve_sync(port, should_rate_limit, THREADS)
    Path(errors_dir, f"{os.getpid()}.errors").write_text(str(errors))


def serve(args: argparse.Namespace) -> None:
    run_processes(serve_process, [(args.port, args.redis_url, args.mode, args.errors)] * args.procs, pin=True)


def main() -> int:
    if sys.argv[1:2] == ["serve"]:
        ap = argparse.ArgumentParser()
        ap.add_argument("--port", type=int, required=True)
        ap.add_argument("--redis-url", required=True)
        ap.add_argument("--mode", choices=("bridge", "direct"), required=True)
        ap.add_argument("--procs", type=int, default=2)
        ap.add_argument("--errors", default=tempfile.gettempdir())
        serve(ap.parse_args(sys.argv[2:]))
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("--inflight", default="8,128")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    store = EmbeddedRedis().start()
    rclient = redis.Redis.from_url(store.url)
    w = args.workers
    errors_dir = tempfile.mkdtemp(prefix="sync-flavour-")
    servers = [bare_server(f"a: bare sync grpc x{w} pinned", "sync", w, pin=True)]
    servers.append(ratelimitd_server(f"c: ratelimitd x{w} (aio, shipped)", store.url, w))
    for mode in ("bridge", "direct"):
        port = free_port()
        cmd = [sys.executable, "-m", "benchmarks.sync_flavour", "serve", "--port", str(port), "--mode", mode]
        cmd += ["--redis-url", store.url, "--procs", str(w), "--errors", errors_dir]
        servers.append(Server(f"sync {mode} prototype x{w} pinned", cmd, port, uses_redis=True))
    rounds: dict[tuple[str, int], list[Point]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmpdir, serving(servers):
            tmp = Path(tmpdir)
            for server in servers:
                h2load(server.port, 8, 1.0, tmp)
            for n in (int(x) for x in args.inflight.split(",")):
                for r in range(args.rounds):
                    for server in servers:
                        point = measure(server, n, args.seconds, tmp, rclient)
                        rounds.setdefault((server.name, n), []).append(point)
                        rate = f"{point.decided_per_s:7.0f}/s"
                        print(f"  round {r + 1} {server.name:36s} inflight={n:4d} {rate}", flush=True)
    finally:
        store.close()
    errors = sum(int(p.read_text()) for p in Path(errors_dir).glob("*.errors"))
    lines = [
        "# ratelimitd behind the sync gRPC server: prototypes against the shipped aio service",
        "",
        f"Medians of {args.rounds} alternating rounds of {args.seconds:g} s; {w} processes each; errors raised by"
        f" the prototypes' handlers: {errors}.",
        "",
        "| variant | in flight | checks/s | p50 ms | p99 ms | script calls/check | server CPU s/1000 |",
        "|---|---|---|---|---|---|---|",
    ]
    for (name, n), points in rounds.items():

        def med(attr: str, ps: list[Point] = points) -> float:
            values = [getattr(p, attr) for p in ps if getattr(p, attr) is not None]
            return statistics.median(values) if values else float("nan")

        lines.append(
            f"| {name} | {n} | {med('decided_per_s'):.0f} | {med('p50_ms'):.2f} | {med('p99_ms'):.2f} | "
            f"{med('script_calls_per_check'):.3f} | {med('cpu_s_per_1000'):.3f} |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sync_flavour.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
