"""Service settings: each has a `--flag` and a `RATELIMITD_<FLAG>` environment variable."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Settings:
    config: str
    redis_url: str | None = None
    redis_url_file: str | None = None
    grpc_listen: str = "127.0.0.1:8081"
    http_listen: str = "127.0.0.1:8080"
    store_timeout: float = 0.05
    failure_mode: str = "allow"
    response_headers: bool = False
    key_prefix: str = "rl:"
    hash_values: bool = False
    log_level: str = "info"
    max_batch: int = 128
    batch_linger: float = 0.0
    idle_spin: float = 0.001
    expose_store_time: bool = False
    near_limit_ratio: float = 0.8
    max_message_bytes: int = 65536
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    admin_token: str | None = None
    admin_token_file: str | None = None
    admin_listen: str | None = None
    admin_http_listen: str | None = None
    watch_config: bool = True
    workers: int = max(1, os.cpu_count() or 1)
    cpu_affinity: str = "auto"
    max_worker_restarts: int = 5
    worker_restart_window: float = 60.0
    local_cache_size: int = 100_000
    rlqs_max_buckets_per_stream: int = 1000
    rlqs_max_buckets: int = 100_000
    rlqs_abandon_after: float = 60.0


def env_name(flag: str) -> str:
    return "RATELIMITD_" + flag.upper().replace("-", "_")


def env_default(flag: str, default: Any = None) -> Any:
    return os.environ.get(env_name(flag), default)


def shown(value: Any) -> str:
    """A default as `--help` and the README's flag table show it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _flag(p: argparse.ArgumentParser, name: str, help: str, default_text: str | None = None, **kw: Any) -> None:
    field = name.replace("-", "_")
    default: Any = next(f.default for f in fields(Settings) if f.name == field)
    if isinstance(default, bool):
        on = str(env_default(name, "")).lower() in ("1", "true", "yes", "on")
        p.add_argument(f"--{name}", action="store_true", default=on, help=f"{help} (default: {shown(on)})")
        return
    raw = env_default(name)
    value = default if raw is None else type(default)(raw) if default is not None else raw
    text = default_text if raw is None and default_text else shown(value)
    p.add_argument(
        f"--{name}",
        default=value,
        type=type(default) if default is not None else str,
        help=f"{help} (default: {text})",
        **kw,
    )


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    config = env_default("config")
    p.add_argument(
        "--config",
        default=config,
        required=config is None,
        help="YAML file or directory of YAML files, one domain per file (default: none, required)",
    )
    _flag(
        p,
        "redis-url",
        "redis://, rediss://, redis+cluster://h:p[,h:p] or redis+sentinel://h:p[,h:p]/master; "
        "omitted: start an embedded server",
    )
    _flag(p, "redis-url-file", "read the store URL (with its credentials) from this file instead")
    _flag(p, "grpc-listen", "gRPC listener (Envoy RLS, health, reflection)")
    _flag(p, "http-listen", "HTTP listener (/healthz, /metrics, /v1/check, /v1/forward-auth, /v1/admin)")
    _flag(p, "store-timeout", "seconds a store call may take before the failure mode answers")
    _flag(p, "failure-mode", "answer when the store cannot: allow or deny", choices=("allow", "deny"))
    _flag(p, "response-headers", "add RateLimit-Limit/-Remaining/-Reset to Envoy responses")
    _flag(p, "key-prefix", "prefix of every Redis key")
    _flag(p, "hash-values", "store a SHA-256 of descriptor values in Redis keys instead of the values")
    _flag(p, "log-level", "debug, info, warning or error")
    _flag(p, "max-batch", "most requests one store call carries")
    _flag(p, "idle-spin", "longest the idle loop polls for a lone store reply instead of sleeping (s; 0: off)")
    _flag(
        p,
        "batch-linger",
        "opt-in: under load, longest a store call waits for more requests to share it (s); for a remote Redis",
    )
    _flag(p, "near-limit-ratio", "share of a limit above which admitted hits count as near_limit")
    _flag(p, "max-message-bytes", "largest request accepted on the gRPC and HTTP listeners")
    _flag(p, "tls-cert", "PEM certificate chain: serve gRPC and HTTP over TLS")
    _flag(p, "tls-key", "PEM private key for --tls-cert")
    _flag(p, "tls-client-ca", "PEM CA bundle: require client certificates signed by it (mutual TLS)")
    _flag(p, "admin-token", "enable the admin API; callers send 'authorization: Bearer <token>'")
    _flag(p, "admin-token-file", "admin token from this file (preferred), or named tokens as name:token lines")
    _flag(p, "admin-listen", "serve the admin API (gRPC) on this separate listener instead of the main one")
    _flag(p, "admin-http-listen", "serve the admin API (HTTP) and the console on this separate listener instead")
    p.add_argument(
        "--no-watch-config",
        dest="watch_config",
        action="store_false",
        default=env_default("watch-config", "1") not in ("0", "false", "no", "off"),
        help="do not reload the config when its files change (SIGHUP still reloads) (default: off)",
    )
    _flag(p, "workers", "processes sharing the listeners (SO_REUSEPORT)", default_text="number of cores")
    _flag(
        p,
        "cpu-affinity",
        "auto: with 2+ workers and no more workers than usable CPUs, keep each worker (and its gRPC "
        "threads) on a CPU of its own; off: let the kernel move them",
        choices=("auto", "off"),
    )
    _flag(
        p, "max-worker-restarts", "most deaths of one worker within --worker-restart-window; one more stops the service"
    )
    _flag(p, "worker-restart-window", "seconds over which a worker's deaths are counted (restarts back off meanwhile)")
    _flag(p, "local-cache-size", "keys remembered as over their limit until their reset (0: off)")
    _flag(p, "rlqs-max-buckets-per-stream", "RLQS buckets one Envoy stream may hold; new ones past it get none")
    _flag(p, "rlqs-max-buckets", "RLQS buckets all streams of one worker may hold; new ones past it get none")
    _flag(p, "rlqs-abandon-after", "seconds an RLQS bucket may be reported idle before it is abandoned")
    _flag(p, "expose-store-time", "send decision order (store time:seq) as trailing metadata ratelimitd-store-order")


def settings_from_args(ns: argparse.Namespace) -> Settings:
    settings = Settings(**{f.name: getattr(ns, f.name) for f in fields(Settings)})
    if settings.redis_url_file:  # credentials kept out of argv and the environment
        url = Path(settings.redis_url_file).read_text(encoding="utf-8").strip()
        settings = replace(settings, redis_url=url or None)
    return settings
