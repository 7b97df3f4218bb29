"""Wires settings, store, engine and the listeners into one running service."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine
from contextlib import suppress
from typing import Any

import grpc
from aiohttp import web
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ratelimitd.api.envoy_rls import SERVICE_NAME, EnvoyRateLimitService
from ratelimitd.api.http import make_app
from ratelimitd.api.native import RateLimiterService
from ratelimitd.config.loader import load_config
from ratelimitd.engine.engine import ConfigHolder, Engine, EngineOptions
from ratelimitd.settings import Settings
from ratelimitd.store.coalescer import Coalescer
from ratelimitd.store.connect import connect
from ratelimitd.store.embedded import EmbeddedRedis
from ratelimitd.store.keys import KeyEncoder
from ratelimitd.store.redis_store import RedisStore
from ratelimitd.v1 import ratelimitd_pb2 as native_pb
from ratelimitd.v1 import ratelimitd_pb2_grpc as native_pb_grpc

log = logging.getLogger("ratelimitd")


def split_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedded: EmbeddedRedis | None = None
        self.stopping = asyncio.Event()
        self.healthy = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> int:
        s = self.settings
        holder = ConfigHolder(load_config(s.config))
        for line in holder.current.summary():
            log.info("config loaded: %s", line)
        url = s.redis_url
        if not url:
            self.embedded = EmbeddedRedis().start()
            url = self.embedded.url
            log.info(
                "no --redis-url given: started embedded %s on 127.0.0.1:%d", self.embedded.binary, self.embedded.port
            )
        store = connect(url, timeout=s.store_timeout)
        coalescer = Coalescer(store.evaluate, timeout=s.store_timeout, max_batch=s.max_batch)
        engine = Engine(
            holder,
            coalescer.submit,
            KeyEncoder(s.key_prefix, s.hash_values),
            EngineOptions(failure_mode_deny=s.failure_mode == "deny", response_headers=s.response_headers),
        )

        server = grpc.aio.server()
        rls_pb2_grpc.add_RateLimitServiceServicer_to_server(EnvoyRateLimitService(engine, s.expose_store_time), server)
        native_pb_grpc.add_RateLimiterServicer_to_server(RateLimiterService(engine), server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        names = (
            SERVICE_NAME,
            native_pb.DESCRIPTOR.services_by_name["RateLimiter"].full_name,
            health.SERVICE_NAME,
            reflection.SERVICE_NAME,
            rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name,
        )
        reflection.enable_server_reflection(names, server)
        gport = server.add_insecure_port(s.grpc_listen)
        await server.start()

        runner = web.AppRunner(make_app(engine, lambda: self.healthy), access_log=None)
        await runner.setup()
        host, port = split_hostport(s.http_listen)
        await web.TCPSite(runner, host, port).start()

        if not await store.ping():
            log.warning("store at %s does not answer yet; failure mode applies until it does", _redact(url))
        await self.check_eviction_policy(store)
        engine.on_store_recovered = lambda: self._background(self.check_eviction_policy(store))
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.healthy = True
        log.info("serving gRPC on %s (port %d), HTTP on %s", s.grpc_listen, gport, s.http_listen)

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        await self.stopping.wait()

        log.info("stopping: draining in-flight requests")
        self.healthy = False
        await health_servicer.enter_graceful_shutdown()
        await server.stop(grace=5)
        await runner.cleanup()
        with suppress(Exception):
            await store.close()
        if self.embedded is not None:
            self.embedded.close()
        log.info("stopped")
        return 0

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def check_eviction_policy(store: RedisStore) -> None:
        policy = await store.eviction_policy()
        if policy is not None and policy != "noeviction":
            log.warning(
                "store maxmemory-policy is '%s', not 'noeviction': an evicted key silently resets a limit", policy
            )


def _redact(url: str) -> str:
    """Never log store credentials."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url


def serve(settings: Settings) -> int:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(Service(settings).run())
