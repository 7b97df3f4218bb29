"""The ceiling: the fastest bare Python gRPC server for Envoy's ShouldRateLimit on this machine.

It decodes the real RateLimitRequest and returns a fixed OK RateLimitResponse, nothing else.
Flavours: grpc.aio on uvloop, or the sync grpc.server with a thread pool; N processes share the port
(SO_REUSEPORT). The `-redis` flavours also make one Redis script call per request (an INCR per descriptor,
through ratelimitd's own store client on aio, redis-py with hiredis per thread on sync): the floor of any
design that asks Redis once per request, for `benchmarks/experiments/latency_floor.py`.
Usage: python -m benchmarks.baseline_server --port P [--flavour aio|sync|aio-redis|sync-redis] [--procs N]
[--pin] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from envoy.service.ratelimit.v3 import rls_pb2

METHOD = "ShouldRateLimit"
SERVICE = "envoy.service.ratelimit.v3.RateLimitService"
OK = rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OK)
OPTIONS = [("grpc.so_reuseport", 1)]
SCRIPT = "for i = 1, #KEYS do redis.call('INCR', KEYS[i]) end return #KEYS"


def _keys(request: rls_pb2.RateLimitRequest) -> list[str]:
    return ["floor:" + "|".join(e.value for e in d.entries) for d in request.descriptors]


def _handler(fn: Any) -> grpc.GenericRpcHandler:
    method = grpc.unary_unary_rpc_method_handler(
        fn,
        request_deserializer=rls_pb2.RateLimitRequest.FromString,
        response_serializer=rls_pb2.RateLimitResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(SERVICE, {METHOD: method})


def serve_aio(port: int, make_handler: Callable[[], Callable[..., Any]]) -> None:
    """ShouldRateLimit on grpc.aio under uvloop until SIGTERM, answered by the handler `make_handler()` builds on
    the running loop (a store client must be made there)."""
    import uvloop

    async def main() -> None:
        server = grpc.aio.server(options=OPTIONS)
        server.add_generic_rpc_handlers((_handler(make_handler()),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.stop(0)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def run_aio(port: int) -> None:
    async def should_rate_limit(request: rls_pb2.RateLimitRequest, context: Any) -> rls_pb2.RateLimitResponse:
        for d in request.descriptors:  # touch the decoded request, as a real handler must
            _ = d.entries[0].value if d.entries else None
        return OK

    serve_aio(port, lambda: should_rate_limit)


def run_aio_redis(port: int, redis_url: str) -> None:
    from ratelimitd.store.connect import connect
    from ratelimitd.store.script_call import Script

    def build() -> Callable[..., Any]:
        store = connect(redis_url)
        script = Script(SCRIPT)

        async def should_rate_limit(request: rls_pb2.RateLimitRequest, context: Any) -> rls_pb2.RateLimitResponse:
            await store.scripts.run(script, _keys(request), [])
            return OK

        return should_rate_limit

    serve_aio(port, build)


def run_sync_redis(port: int, redis_url: str) -> None:
    import redis

    local = threading.local()

    def should_rate_limit(request: rls_pb2.RateLimitRequest, context: Any) -> rls_pb2.RateLimitResponse:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = redis.Redis.from_url(redis_url)
            local.sha = client.script_load(SCRIPT)
        keys = _keys(request)
        client.evalsha(local.sha, len(keys), *keys)
        return OK

    serve_sync(port, should_rate_limit, threads=16)


def run_sync(port: int) -> None:
    def should_rate_limit(request: rls_pb2.RateLimitRequest, context: Any) -> rls_pb2.RateLimitResponse:
        for d in request.descriptors:
            _ = d.entries[0].value if d.entries else None
        return OK

    serve_sync(port, should_rate_limit, threads=16)


def serve_sync(port: int, fn: Any, threads: int) -> None:
    """ShouldRateLimit answered by `fn` on a sync gRPC server with `threads` handler threads, until SIGTERM."""
    server = grpc.server(ThreadPoolExecutor(max_workers=threads), options=OPTIONS)
    server.add_generic_rpc_handlers((_handler(fn),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(0)


def _pinned(target: Callable[..., None], cpu: int, *args: Any) -> None:
    os.sched_setaffinity(0, {cpu})  # before gRPC starts its threads: they inherit it
    target(*args)


def run_processes(target: Callable[..., None], args: Sequence[tuple[Any, ...]], pin: bool) -> None:
    """One spawned process per `args`, each kept to one CPU (round robin) if `pin`; SIGTERM stops them all."""
    ctx = mp.get_context("spawn")
    cpus = sorted(os.sched_getaffinity(0))
    procs = [
        ctx.Process(target=_pinned, args=(target, cpus[i % len(cpus)], *a))
        if pin
        else ctx.Process(target=target, args=a)
        for i, a in enumerate(args)
    ]
    for proc in procs:
        proc.start()

    def stop(*_: object) -> None:
        for proc in procs:
            proc.terminate()

    signal.signal(signal.SIGTERM, stop)
    for proc in procs:
        proc.join()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--flavour", choices=("aio", "sync", "aio-redis", "sync-redis"), default="aio")
    p.add_argument("--redis-url", help="the -redis flavours' store")
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--pin", action="store_true", help="keep each process on one CPU (round robin)")
    a = p.parse_args()
    targets: dict[str, tuple[Callable[..., None], tuple[Any, ...]]] = {
        "aio": (run_aio, (a.port,)),
        "sync": (run_sync, (a.port,)),
        "aio-redis": (run_aio_redis, (a.port, a.redis_url)),
        "sync-redis": (run_sync_redis, (a.port, a.redis_url)),
    }
    target, args = targets[a.flavour]
    if a.procs == 1:
        target(*args)
        return
    run_processes(target, [args] * a.procs, a.pin)


if __name__ == "__main__":
    main()
