"""Service settings: each has a `--flag` and a `RATELIMITD_<FLAG>` environment variable."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
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


def env_default(flag: str, default: Any = None) -> Any:
    return os.environ.get("RATELIMITD_" + flag.upper().replace("-", "_"), default)


def env_flag(flag: str) -> bool:
    return str(env_default(flag, "")).lower() in ("1", "true", "yes", "on")


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        default=env_default("config"),
        required=env_default("config") is None,
        help="YAML file or directory of YAML files, one domain per file",
    )
    p.add_argument(
        "--redis-url",
        default=env_default("redis-url"),
        help="redis://[user:pass@]host:port/db or rediss://; omitted: start an embedded server",
    )
    p.add_argument("--grpc-listen", default=env_default("grpc-listen", "127.0.0.1:8081"))
    p.add_argument("--http-listen", default=env_default("http-listen", "127.0.0.1:8080"))
    p.add_argument(
        "--store-timeout",
        type=float,
        default=float(env_default("store-timeout", "0.05")),
        help="seconds a store call may take before the failure mode answers",
    )
    p.add_argument("--failure-mode", choices=("allow", "deny"), default=env_default("failure-mode", "allow"))
    p.add_argument(
        "--response-headers",
        action="store_true",
        default=env_flag("response-headers"),
        help="add RateLimit-Limit/-Remaining/-Reset to Envoy responses",
    )
    p.add_argument("--key-prefix", default=env_default("key-prefix", "rl:"))
    p.add_argument(
        "--hash-values",
        action="store_true",
        default=env_flag("hash-values"),
        help="store a SHA-256 of descriptor values in Redis keys instead of the values",
    )
    p.add_argument("--log-level", default=env_default("log-level", "info"))
    p.add_argument(
        "--max-batch",
        type=int,
        default=int(env_default("max-batch", "128")),
        help="most requests one store call carries",
    )


def settings_from_args(ns: argparse.Namespace) -> Settings:
    return Settings(
        config=ns.config,
        redis_url=ns.redis_url,
        grpc_listen=ns.grpc_listen,
        http_listen=ns.http_listen,
        store_timeout=ns.store_timeout,
        failure_mode=ns.failure_mode,
        response_headers=ns.response_headers,
        key_prefix=ns.key_prefix,
        hash_values=ns.hash_values,
        log_level=ns.log_level,
        max_batch=ns.max_batch,
    )
