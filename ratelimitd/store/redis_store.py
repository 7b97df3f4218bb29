"""Runs batches of checks as one EVALSHA of the assembled script against standalone Redis.

NOSCRIPT (after a restart or SCRIPT FLUSH) is answered by loading the script and retrying once, so no
request fails because the server forgot it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from ratelimitd.store.checks import CheckBatch
from ratelimitd.store.scripts import batch_script, script_sha

log = logging.getLogger(__name__)


class StoreUnavailable(Exception):
    """The store did not answer in time or answered with an error; the failure mode decides."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    admitted: bool
    remaining: int
    reset_after_us: int
    retry_after_us: int  # 0 when admitted, -1 when the cost can never fit


@dataclass(frozen=True, slots=True)
class BatchResult:
    now_us: int
    results: list[list[CheckResult]]


def encode_batch(requests: Sequence[CheckBatch], now_us: int | None) -> tuple[list[str], list[int | str]]:
    keys: list[str] = []
    args: list[int | str] = ["" if now_us is None else now_us, len(requests)]
    for req in requests:
        args.append(len(req.checks))
        args.append(1 if req.dry_run else 0)
        for c in req.checks:
            keys.append(c.key)
            args.extend(c.args)
    return keys, args


def decode_batch(raw: list[int], requests: Sequence[CheckBatch]) -> BatchResult:
    out: list[list[CheckResult]] = []
    i = 1
    for req in requests:
        row = []
        for _ in req.checks:
            row.append(CheckResult(raw[i] == 1, raw[i + 1], raw[i + 2], raw[i + 3]))
            i += 4
        out.append(row)
    return BatchResult(raw[0], out)


class RedisStore:
    def __init__(self, client: aioredis.Redis, timeout: float = 0.05) -> None:
        self.client = client
        self.timeout = timeout
        self.script = batch_script()
        self.sha = script_sha(self.script)

    async def evaluate(self, requests: Sequence[CheckBatch], now_us: int | None = None) -> BatchResult:
        keys, args = encode_batch(requests, now_us)
        try:
            raw = await asyncio.wait_for(self._evalsha(keys, args), self.timeout)
        except (RedisError, OSError, TimeoutError) as err:
            raise StoreUnavailable(f"{type(err).__name__}: {err}") from err
        return decode_batch(raw, requests)

    async def _evalsha(self, keys: list[str], args: list[int | str]) -> list[int]:
        try:
            return await self.client.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[no-any-return]
        except NoScriptError:
            log.info("script not loaded on the store; loading it")
            await self.client.script_load(self.script)
            return await self.client.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[no-any-return]

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.client.ping(), max(self.timeout, 1.0)))
        except (RedisError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        await self.client.aclose()


def connect(url: str, timeout: float = 0.05, max_connections: int = 64) -> RedisStore:
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=None)
    return RedisStore(aioredis.Redis(connection_pool=pool), timeout)
