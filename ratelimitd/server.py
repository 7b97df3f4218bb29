"""Wires settings, store, engine and the listeners into one running service."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Coroutine
from contextlib import suppress
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from envoy.service.rate_limit_quota.v3 import rlqs_pb2, rlqs_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ratelimitd.api.admin import AdminService, TokenCheck, add_admin_routes
from ratelimitd.api.console import add_console_routes
from ratelimitd.api.domains_admin import DomainRpcs, add_domain_routes
from ratelimitd.api.envoy_rls import SERVICE_NAME, EnvoyRateLimitService
from ratelimitd.api.envoy_rls import decode as envoy_decode
from ratelimitd.api.grpc_util import add_check_methods
from ratelimitd.api.http import make_app
from ratelimitd.api.native import RateLimiterService
from ratelimitd.api.native import decode as native_decode
from ratelimitd.api.rlqs import RlqsService
from ratelimitd.config.holder import ConfigHolder
from ratelimitd.config.loader import load_config
from ratelimitd.config.reloader import ConfigReloader
from ratelimitd.engine.admin import AdminOps
from ratelimitd.engine.engine import Engine, EngineOptions
from ratelimitd.engine.fleet_stats import FleetStats
from ratelimitd.engine.local_cache import OverLimitCache
from ratelimitd.engine.rlqs import RlqsEngine
from ratelimitd.engine.stored_limits import LimitsEditor, LimitsSync
from ratelimitd.metrics import Metrics
from ratelimitd.scheduler.coalescer import Coalescer
from ratelimitd.settings import Settings
from ratelimitd.store.connect import connect
from ratelimitd.store.embedded import EmbeddedRedis
from ratelimitd.store.fleet_stats import FleetStatsStore
from ratelimitd.store.interface import StoreUnavailable
from ratelimitd.store.keys import KeyEncoder
from ratelimitd.store.limits_store import LimitsStore
from ratelimitd.store.redis_store import RedisStore
from ratelimitd.store.rlqs_store import ShareStore
from ratelimitd.v1 import ratelimitd_pb2 as native_pb
from ratelimitd.v1 import ratelimitd_pb2_grpc as native_pb_grpc

log = logging.getLogger("ratelimitd")
NATIVE_SERVICE = native_pb.DESCRIPTOR.services_by_name["RateLimiter"].full_name
ADMIN_SERVICE = native_pb.DESCRIPTOR.services_by_name["Admin"].full_name
RLQS_SERVICE = rlqs_pb2.DESCRIPTOR.services_by_name["RateLimitQuotaService"].full_name


def split_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def admin_tokens(s: Settings) -> dict[str, str]:
    """Admin tokens by name. A token file holds one bare token (named `admin`) or `name:token` lines."""
    if not s.admin_token_file:
        return {"admin": s.admin_token} if s.admin_token else {}
    lines = [line.strip() for line in Path(s.admin_token_file).read_text().splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if len(lines) == 1 and ":" not in lines[0]:
        return {"admin": lines[0]}
    tokens = {}
    for line in lines:
        name, sep, token = line.partition(":")
        if not sep or not name.strip() or not token.strip():
            raise ValueError(f"{s.admin_token_file}: each line must be 'name:token'")
        tokens[name.strip()] = token.strip()
    return tokens


def grpc_credentials(s: Settings) -> grpc.ServerCredentials | None:
    if not s.tls_cert:
        return None
    if not s.tls_key:
        raise ValueError("--tls-cert needs --tls-key")
    pair = (Path(s.tls_key).read_bytes(), Path(s.tls_cert).read_bytes())
    ca = Path(s.tls_client_ca).read_bytes() if s.tls_client_ca else None
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)


def http_ssl_context(s: Settings) -> ssl.SSLContext | None:
    if not s.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(s.tls_cert, s.tls_key)
    if s.tls_client_ca:
        ctx.load_verify_locations(s.tls_client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class Service:
    """The composition root: builds the store, engine and listeners from settings (`__init__` does no I/O),
    starts them (`start`), and stops them (`stop`). Signals and processes are the caller's: the CLI and
    `workers.py` run it until a signal, tests run it inside their own event loop."""

    def __init__(self, settings: Settings, replacement: bool = False) -> None:
        s = self.settings = settings
        self.metrics = Metrics(near_limit_ratio=s.near_limit_ratio, hash_values=s.hash_values)
        if replacement:  # a worker started again after another died
            self.metrics.worker_restarts.inc()
        self.holder = ConfigHolder(load_config(s.config))
        self.reloader = ConfigReloader(s.config, self.holder, self.metrics.count_config_load)
        self.embedded: EmbeddedRedis | None = None
        self.store: RedisStore | None = None
        self.limits_sync: LimitsSync | None = None
        self.fleet_stats: FleetStats | None = None
        self.healthy = False
        self.grpc_port = 0
        self.http_port = 0
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._grpc: grpc.aio.Server | None = None
        self._admin_grpc: grpc.aio.Server | None = None
        self._http: web.AppRunner | None = None
        self._admin_http: web.AppRunner | None = None
        self._admin_app: web.Application | None = None
        self.admin_http_port = 0
        self._health = health.aio.HealthServicer()

    def reload(self, reason: str) -> bool:
        return self.reloader.reload(reason)

    async def start(self) -> None:
        """Connect, listen and report SERVING; the bound ports are in `grpc_port` and `http_port`."""
        s = self.settings
        for line in self.holder.current.summary():
            log.info("config loaded: %s", line)
        url = s.redis_url
        if not url:
            self.embedded = EmbeddedRedis().start()
            url = self.embedded.url
            log.info(
                "no --redis-url given: started embedded %s on 127.0.0.1:%d", self.embedded.binary, self.embedded.port
            )
        store = self.store = connect(url, timeout=s.store_timeout)
        stats = self.fleet_stats = FleetStats(self.holder, FleetStatsStore(store, s.key_prefix), self.metrics)
        sync = self.limits_sync = LimitsSync(self.holder, LimitsStore(store, s.key_prefix), self.metrics)
        with suppress(StoreUnavailable):
            await sync.refresh()  # the stored limits before the first request, when the store answers
        engine = self._engine(store)
        app = make_app(engine, lambda: self.healthy, s.max_message_bytes)
        self._grpc = self._grpc_server(engine, store, app, sync, stats)
        self.grpc_port = self._add_port(self._grpc, s.grpc_listen)
        await self._grpc.start()
        if self._admin_grpc is not None:
            await self._admin_grpc.start()
        self._http = web.AppRunner(app, access_log=None)
        await self._http.setup()
        host, port = split_hostport(s.http_listen)
        site = web.TCPSite(self._http, host, port, ssl_context=http_ssl_context(s), reuse_port=s.workers > 1)
        await site.start()
        self.http_port = int(self._http.addresses[0][1])
        if self._admin_app is not None and s.admin_http_listen:
            self._admin_http = web.AppRunner(self._admin_app, access_log=None)
            await self._admin_http.setup()
            admin_host, admin_port = split_hostport(s.admin_http_listen)
            admin_site = web.TCPSite(
                self._admin_http, admin_host, admin_port, ssl_context=http_ssl_context(s), reuse_port=s.workers > 1
            )
            await admin_site.start()
            self.admin_http_port = int(self._admin_http.addresses[0][1])

        if not await store.ping():
            log.warning("store at %s does not answer yet; failure mode applies until it does", redact(url))
        await self.check_eviction_policy(store)
        engine.on_store_recovered = lambda: self._background(self.check_eviction_policy(store))
        for name in ("", SERVICE_NAME, NATIVE_SERVICE):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if s.watch_config:
            self._background(self.reloader.watch(self._stopping))
        self._background(sync.run(self._stopping))
        self._background(stats.run(self._stopping))
        self._background(self.metrics.flush_every())
        self.healthy = True
        log.info(
            "serving gRPC on %s:%d, HTTP on %s:%d%s",
            split_hostport(s.grpc_listen)[0],
            self.grpc_port,
            host,
            self.http_port,
            " with TLS" + (" (client certificates required)" if s.tls_client_ca else "") if s.tls_cert else "",
        )

    async def stop(self) -> None:
        """NOT_SERVING, drain in-flight requests (5 s), then close everything that `start` opened."""
        log.info("stopping: draining in-flight requests")
        self.healthy = False
        self._stopping.set()
        await self._health.enter_graceful_shutdown()
        if self._grpc is not None:
            await self._grpc.stop(grace=5)
        if self._admin_grpc is not None:
            await self._admin_grpc.stop(grace=1)
        if self._http is not None:
            await self._http.cleanup()
        if self._admin_http is not None:
            await self._admin_http.cleanup()
        for task in list(self._tasks):
            task.cancel()
        self.metrics.flush()
        if self.store is not None:
            with suppress(Exception):
                await self.store.close()
        if self.embedded is not None:
            self.embedded.close()
        log.info("stopped")

    def _engine(self, store: RedisStore) -> Engine:
        s = self.settings
        coalescer = Coalescer(
            store.evaluate,
            timeout=s.store_timeout,
            max_batch=s.max_batch,
            metrics=self.metrics,
            linger=s.batch_linger,
            idle_spin=s.idle_spin,
        )
        return Engine(
            self.holder,
            coalescer.submit,
            KeyEncoder(s.key_prefix, s.hash_values),
            EngineOptions(failure_mode_deny=s.failure_mode == "deny"),
            self.metrics,
            OverLimitCache(s.local_cache_size) if s.local_cache_size > 0 else None,
        )

    def _grpc_server(
        self, engine: Engine, store: RedisStore, app: web.Application, sync: LimitsSync, stats: FleetStats
    ) -> grpc.aio.Server:
        """The gRPC server with every face; the admin API (gRPC and HTTP) when a token or listener is set."""
        s = self.settings
        limits = [("grpc.max_receive_message_length", s.max_message_bytes)]
        server = grpc.aio.server(options=[*limits, ("grpc.so_reuseport", 1)])
        envoy_face = EnvoyRateLimitService(engine, s.expose_store_time, s.response_headers)
        rls = (envoy_face.ShouldRateLimit, rls_pb2.RateLimitRequest, rls_pb2.RateLimitResponse, envoy_decode)
        add_check_methods(server, SERVICE_NAME, {"ShouldRateLimit": rls})
        native = RateLimiterService(engine)
        check = (native.Check, native_pb.CheckRequest, native_pb.CheckResponse, native_decode)
        add_check_methods(server, NATIVE_SERVICE, {"Check": check})
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        rlqs = RlqsService(
            RlqsEngine(self.holder, ShareStore(store), engine.keys, self.metrics),
            self.metrics,
            s.rlqs_max_buckets_per_stream,
            s.rlqs_max_buckets,
            s.rlqs_abandon_after,
        )
        rlqs_pb2_grpc.add_RateLimitQuotaServiceServicer_to_server(rlqs, server)
        names = [SERVICE_NAME, NATIVE_SERVICE, RLQS_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME]
        token = admin_tokens(s)
        if token or s.admin_listen or s.admin_http_listen:
            ops = AdminOps(engine, store)
            tokens = TokenCheck(token, self.metrics)
            editor = LimitsEditor(self.holder, sync.backend, sync, self.metrics)
            admin_service = AdminService(ops, tokens, DomainRpcs(editor))
            if s.admin_listen:
                self._admin_grpc = grpc.aio.server(options=limits)
                native_pb_grpc.add_AdminServicer_to_server(admin_service, self._admin_grpc)
                self._add_port(self._admin_grpc, s.admin_listen)
            else:
                native_pb_grpc.add_AdminServicer_to_server(admin_service, server)
                names.append(ADMIN_SERVICE)
            # HTTP admin and the console: on their own listener when asked, else beside the checks unless the
            # admin API was moved to a private gRPC listener.
            http_admin = self._admin_app = web.Application() if s.admin_http_listen else None
            if http_admin is None and not s.admin_listen:
                http_admin = app
            if http_admin is not None:
                add_admin_routes(http_admin, ops, tokens)
                authorize = lambda r: tokens.ok(r.headers.get("Authorization"), str(r.remote))  # noqa: E731
                add_domain_routes(http_admin, editor, authorize)
                add_console_routes(http_admin, stats, authorize)
            log.info(
                "admin API enabled%s%s",
                "".join(f" on {a}" for a in (s.admin_listen, s.admin_http_listen) if a),
                "" if token else " WITHOUT a token (private listener)",
            )
        reflection.enable_server_reflection(names, server)
        return server

    def _add_port(self, server: grpc.aio.Server, address: str) -> int:
        creds = grpc_credentials(self.settings)
        return int(server.add_secure_port(address, creds) if creds else server.add_insecure_port(address))

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


def redact(url: str) -> str:
    """Never log store credentials."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url
