"""Calling the scripts: their argument layout, the reply's decoding, and the one protocol both script clients
satisfy — the lean client for standalone Redis (`fast_client.py`) and redis-py for cluster, Sentinel and TLS
(`RedisPyScripts`) — so the store never asks which client it holds."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from ratelimitd.store.checks import CheckBatch
from ratelimitd.store.interface import BatchResult, CheckResult, RequestResult

log = logging.getLogger(__name__)

Arg = int | str
RedisPy = aioredis.Redis | RedisCluster


class Script:
    """One Lua script, called by its SHA-1 (EVALSHA) and sent whole (EVAL) when the server does not know it."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()  # Redis names scripts by SHA-1


class ScriptClient(Protocol):
    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> object:
        """The script's reply; EVALSHA, falling back to EVAL on NOSCRIPT."""
        ...

    async def run_batch(self, script: Script, requests: Sequence[CheckBatch], now_us: int | None) -> object:
        """The batch script on these requests (`encode_batch`'s layout)."""
        ...

    async def close(self) -> None: ...


async def with_fallback(
    script: Script, by_sha: Callable[[], Awaitable[object]], by_text: Callable[[], Awaitable[object]]
) -> object:
    """EVALSHA first; the script text only after a restart or SCRIPT FLUSH made the server forget it."""
    try:
        return await by_sha()
    except NoScriptError:
        log.info("script %s not loaded on the store; sending it", script.sha[:10])
        return await by_text()


class RedisPyScripts:
    """redis-py as a `ScriptClient` (it follows MOVED/ASK on a cluster and re-resolves Sentinel masters)."""

    def __init__(self, client: RedisPy) -> None:
        self.client = client

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> object:
        n = len(keys)
        return await with_fallback(
            script,
            lambda: self.client.evalsha(script.sha, n, *keys, *args),
            lambda: self.client.eval(script.text, n, *keys, *args),
        )

    async def run_batch(self, script: Script, requests: Sequence[CheckBatch], now_us: int | None) -> object:
        return await self.run(script, *encode_batch(requests, now_us))

    async def close(self) -> None:
        await self.client.aclose()


def encode_batch(requests: Sequence[CheckBatch], now_us: int | None) -> tuple[list[str], list[Arg]]:
    """KEYS and ARGV of lua/batch.lua: the time override, the number of requests, then per request its number
    of checks, its dry-run flag and each check's arguments."""
    keys: list[str] = []
    args: list[Arg] = ["" if now_us is None else now_us, len(requests)]
    for req in requests:
        args.append(len(req.checks))
        args.append(1 if req.dry_run else 0)
        for c in req.checks:
            keys.append(c.key)
            args.extend(c.args)
    return keys, args


def decode_batch(raw: object, requests: Sequence[CheckBatch]) -> BatchResult:
    """The batch script's reply: the store's time, then per request its verdict and counts, then per check 4
    numbers (lua/batch.lua)."""
    if not isinstance(raw, list) or len(raw) != 1 + sum(4 + 4 * len(r.checks) for r in requests):
        raise ResponseError(f"unexpected reply from the batch script: {str(raw)[:200]}")
    out: list[RequestResult] = []
    i = 1
    for req in requests:
        verdict = raw[i : i + 4]
        i += 4
        row = []
        for _ in req.checks:
            row.append(CheckResult(raw[i] == 1, raw[i + 1], raw[i + 2], raw[i + 3]))
            i += 4
        out.append(RequestResult(verdict[0] == 1, verdict[1], verdict[2], verdict[3], row))
    return BatchResult(raw[0], out)
