"""Turn a store URL into a connected `RedisStore`.

- `redis://[user:password@]host:port/db`, `rediss://…` (TLS): standalone.
- `redis+cluster://[user:password@]host:port[,host:port…]` (or `rediss+cluster://`): Redis Cluster; the
  seeds are only a starting point, redis-py follows MOVED/ASK and refreshes the topology.
- `redis+sentinel://[user:password@]host:port[,host:port…]/master-name[/db]`: the master Sentinel names,
  re-resolved after a failover.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

from ratelimitd.store.fast_client import FastRedis
from ratelimitd.store.redis_store import RedisStore


def _hosts(netloc: str) -> tuple[str | None, str | None, list[tuple[str, int]]]:
    user = password = None
    if "@" in netloc:
        cred, _, netloc = netloc.rpartition("@")
        user, _, password = cred.partition(":")
        user, password = unquote(user) or None, unquote(password) or None
    hosts = []
    for part in netloc.split(","):
        host, _, port = part.rpartition(":")
        hosts.append((host.strip("[]") or "127.0.0.1", int(port or 6379)))
    return user, password, hosts


def connect(url: str, timeout: float = 0.05, max_connections: int = 64) -> RedisStore:
    scheme = url.split("://", 1)[0].lower()
    # Requests are answered at their own deadline (the coalescer's timers); the socket timeout only bounds a
    # hung call so its connection returns to the pool.
    common: dict[str, Any] = {
        "socket_connect_timeout": max(timeout, 0.5),
        "socket_timeout": max(4 * timeout, 0.25),
        "health_check_interval": 0,
    }
    if scheme in ("redis+cluster", "rediss+cluster"):
        parts = urlsplit(url)
        user, password, hosts = _hosts(parts.netloc)
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in hosts],
            username=user,
            password=password,
            ssl=scheme.startswith("rediss"),
            max_connections=max_connections,
            **common,
        )
        return RedisStore(cluster, timeout, cluster=True)
    if scheme == "redis+sentinel":
        parts = urlsplit(url)
        user, password, hosts = _hosts(parts.netloc)
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ValueError("redis+sentinel:// URL needs the master name: redis+sentinel://host:port/mymaster")
        db = int(path[1]) if len(path) > 1 else 0
        sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]  # untyped before redis-py 8
            hosts, sentinel_kwargs={"socket_timeout": 1.0}, username=user, password=password, db=db, **common
        )
        return RedisStore(sentinel.master_for(path[0], max_connections=max_connections), timeout)
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=None, **common)
    lean = (
        FastRedis(url, connect_timeout=max(timeout, 0.5), reply_timeout=max(4 * timeout, 0.25))
        if scheme == "redis"
        else None
    )
    return RedisStore(aioredis.Redis(connection_pool=pool), timeout, scripts=lean)
