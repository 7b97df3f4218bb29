"""Service settings: each has a `--flag` and a `RATELIMITD_<FLAG>` environment variable."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class Settings:
    config: str
    redis_url: str | None = None
    grpc_listen: str = "127.0.0.1:8081"
    http_listen: str = "127.0.0.1:8080"
    store_timeout: float = 0.05
    failure_mode: str = "allow"
    response_headers: bool = False
    key_prefix: str = "rl:"
    hash_values: bool = False
    log_level: str = "info"
    max_batch: int = 128
    expose_store_time: bool = False


def env_name(flag: str) -> str:
    return "RATELIMITD_" + flag.upper().replace("-", "_")


def env_default(flag: str, default: Any = None) -> Any:
    return os.environ.get(env_name(flag), default)


def _flag(p: argparse.ArgumentParser, name: str, help: str, **kw: Any) -> None:
    field = name.replace("-", "_")
    default: Any = next(f.default for f in fields(Settings) if f.name == field)
    if isinstance(default, bool):
        on = str(env_default(name, "")).lower() in ("1", "true", "yes", "on")
        p.add_argument(f"--{name}", action="store_true", default=on, help=help)
        return
    raw = env_default(name)
    value = default if raw is None else type(default)(raw) if default is not None else raw
    p.add_argument(f"--{name}", default=value, type=type(default) if default is not None else str, help=help, **kw)


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    config = env_default("config")
    p.add_argument(
        "--config",
        default=config,
        required=config is None,
        help="YAML file or directory of YAML files, one domain per file",
    )
    _flag(
        p,
        "redis-url",
        "redis://, rediss://, redis+cluster://h:p[,h:p] or redis+sentinel://h:p[,h:p]/master; "
        "omitted: start an embedded server",
    )
    _flag(p, "grpc-listen", "gRPC listener (Envoy RLS, health, reflection)")
    _flag(p, "http-listen", "HTTP listener (/healthz)")
    _flag(p, "store-timeout", "seconds a store call may take before the failure mode answers")
    _flag(p, "failure-mode", "answer when the store cannot: allow or deny", choices=("allow", "deny"))
    _flag(p, "response-headers", "add RateLimit-Limit/-Remaining/-Reset to Envoy responses")
    _flag(p, "key-prefix", "prefix of every Redis key")
    _flag(p, "hash-values", "store a SHA-256 of descriptor values in Redis keys instead of the values")
    _flag(p, "log-level", "debug, info, warning or error")
    _flag(p, "max-batch", "most requests one store call carries")
    _flag(p, "expose-store-time", "send decision order (store time:seq) as trailing metadata ratelimitd-store-order")


def settings_from_args(ns: argparse.Namespace) -> Settings:
    return Settings(**{f.name: getattr(ns, f.name) for f in fields(Settings)})
