"""Runs batches of checks as EVALSHA calls of the assembled script: one call on standalone Redis (or
Sentinel), one per hash slot on a Redis Cluster.

NOSCRIPT (after a restart, failover or SCRIPT FLUSH) is answered by EVAL of the full text, which also
caches the script on that node, so no request fails because a server forgot it.

On a cluster one request's limits can live in different slots. Each slot's part is reserved
all-or-nothing by its own script call; if any part denies, the parts that were charged are refunded
(idempotently, by receipt). This never over-admits; between reserve and refund a concurrent request
may see the reserved units as used and be denied (under-admission for a few milliseconds).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from ratelimitd.store.checks import Check, CheckBatch
from ratelimitd.store.fast_client import FastRedis
from ratelimitd.store.interface import BatchResult, CheckResult, RequestResult, StoreUnavailable, combine
from ratelimitd.store.keys import hash_slot
from ratelimitd.store.resp import pack_evalsha
from ratelimitd.store.scripts import admin_script, batch_script, refund_script, script_sha

log = logging.getLogger(__name__)


# What a store call raises when the store could not answer. A write to a transport closed under redis-py (a
# cluster node going away mid-handshake) raises uvloop's RuntimeError under redis-py 7, and redis-py's own
# ConnectionError (a RedisError) from 8 on: both are the store not answering.
STORE_ERRORS = (RedisError, OSError, RuntimeError)


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
    """The batch script's reply: per request its verdict and counts, then per check 4 numbers."""
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


class Script:
    """One Lua script called by EVALSHA, falling back to EVAL when the server does not know it."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = script_sha(text)

    async def __call__(self, client: Any, keys: Sequence[str], args: Sequence[int | str]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.send_text(client, keys, args)

    async def send_text(self, client: Any, keys: Sequence[str], args: Sequence[int | str]) -> Any:
        log.info("script %s not loaded on the store; sending it", self.sha[:10])
        return await client.eval(self.text, len(keys), *keys, *args)


class RedisStore:
    def __init__(self, client: Any, timeout: float = 0.05, cluster: bool = False, hot: Any = None) -> None:
        self.client = client
        self.hot = hot if hot is not None else client  # the client for script calls (see fast_client.py)
        self.timeout = timeout
        self.cluster = cluster
        self.batch = Script(batch_script())
        self.refund = Script(refund_script())
        self.admin = Script(admin_script())

    async def evaluate(self, requests: Sequence[CheckBatch], now_us: int | None = None) -> BatchResult:
        try:
            if self.cluster:
                return await self._evaluate_by_slot(requests, now_us)
            return await self._call(requests, now_us)
        except STORE_ERRORS as err:
            raise StoreUnavailable(f"{type(err).__name__}: {err}") from err

    async def _call(self, requests: Sequence[CheckBatch], now_us: int | None) -> BatchResult:
        if isinstance(self.hot, FastRedis):  # the command framed from cached pieces (resp.py)
            try:
                raw = await self.hot.execute_packed(pack_evalsha(self.batch.sha, requests, now_us))
            except NoScriptError:
                raw = await self.batch.send_text(self.hot, *encode_batch(requests, now_us))
        else:
            raw = await self.batch(self.hot, *encode_batch(requests, now_us))
        return decode_batch(raw, requests)

    async def _evaluate_by_slot(self, requests: Sequence[CheckBatch], now_us: int | None) -> BatchResult:
        # Split every request into per-slot parts, and send each slot's parts as one call.
        by_slot: dict[int, list[tuple[int, list[int]]]] = defaultdict(list)
        for ri, req in enumerate(requests):
            by_part: dict[int, list[int]] = defaultdict(list)
            for ci, c in enumerate(req.checks):
                by_part[hash_slot(c.key)].append(ci)
            for slot, idxs in by_part.items():
                by_slot[slot].append((ri, idxs))
        slots = list(by_slot)
        calls = []
        for slot in slots:
            parts_batches = [
                CheckBatch(tuple(requests[ri].checks[i] for i in idxs), requests[ri].dry_run)
                for ri, idxs in by_slot[slot]
            ]
            calls.append(self._call(parts_batches, now_us))
        answers = await asyncio.gather(*calls)

        checks: list[list[CheckResult | None]] = [[None] * len(r.checks) for r in requests]
        parts: dict[int, list[tuple[list[int], int, RequestResult]]] = defaultdict(list)
        now = 0
        for slot, answer in zip(slots, answers, strict=True):
            now = max(now, answer.now_us)
            for (ri, idxs), part in zip(by_slot[slot], answer.results, strict=True):
                for ci, r in zip(idxs, part.checks, strict=True):
                    checks[ri][ci] = r
                parts[ri].append((idxs, answer.now_us, part))

        results: list[RequestResult] = []
        refunds = []
        for ri, req in enumerate(requests):
            own = parts[ri]
            row = [r for r in checks[ri] if r is not None]
            if len(own) == 1:
                results.append(own[0][2]._replace(checks=row))
                continue
            verdicts = [part for _, _, part in own]
            admitted = combine(verdicts)
            if not admitted and not req.dry_run:  # undo what the parts that admitted have charged
                for idxs, charged_at, part in own:
                    if not part.admitted:
                        continue
                    charged = [i for i in idxs if row[i].admitted]
                    refunds.append(self._refund([req.checks[i] for i in charged], charged_at))
                    for i in charged:
                        row[i] = row[i]._replace(remaining=row[i].remaining + req.checks[i].args.cost)
            results.append(
                RequestResult(
                    admitted,
                    sum(p.enforced_denied for p in verdicts),
                    sum(p.quota_checks for p in verdicts),
                    sum(p.quota_denied for p in verdicts),
                    row,
                )
            )
        if refunds:
            await asyncio.gather(*refunds)
        return BatchResult(now, results)

    async def _refund(self, checks: Sequence[Check], charged_at: int) -> None:
        if not checks:
            return
        receipt = f"{checks[0].key}:refund:{secrets.token_hex(8)}"
        args: list[int | str] = [charged_at]
        for c in checks:
            args.extend(c.args)
        await self.refund(self.client, [receipt, *(c.key for c in checks)], args)

    async def delete(self, key: str) -> bool:
        """Forget one limit's state (admin reset)."""
        try:
            return bool(await self.client.delete(key))
        except STORE_ERRORS as err:
            raise StoreUnavailable(f"{type(err).__name__}: {err}") from err

    async def adjust_quota(self, check: Check, delta: int) -> tuple[int, int, int, int]:
        """Atomically add `delta` to this period's allowance: (remaining, used, granted, reset_after_us)."""
        try:
            raw = await self.admin(self.client, [check.key], ["adjust_quota", delta, *check.args])
        except STORE_ERRORS as err:
            raise StoreUnavailable(f"{type(err).__name__}: {err}") from err
        return int(raw[0]), int(raw[1]), int(raw[2]), int(raw[3])

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.client.ping(), max(self.timeout, 1.0)))
        except STORE_ERRORS:
            return False

    async def eviction_policy(self) -> str | None:
        """The server's maxmemory-policy, or None where CONFIG is not allowed (managed Redis)."""
        try:
            answer = await asyncio.wait_for(self.client.config_get("maxmemory-policy"), 2.0)
        except STORE_ERRORS:
            return None
        if isinstance(answer, dict) and "maxmemory-policy" in answer:
            value = answer["maxmemory-policy"]
            return value.decode() if isinstance(value, bytes) else str(value)
        return None

    async def close(self) -> None:
        if self.hot is not self.client:
            self.hot.close()
        await self.client.aclose()
