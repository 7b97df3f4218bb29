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

from redis.exceptions import RedisError, ResponseError

from ratelimitd.store.checks import Check, CheckBatch
from ratelimitd.store.interface import BatchResult, CheckResult, RequestResult, StoreUnavailable, combine
from ratelimitd.store.keys import hash_slot
from ratelimitd.store.script_call import Arg, RedisPy, RedisPyScripts, Script, ScriptClient, decode_batch
from ratelimitd.store.scripts import admin_script, batch_script, refund_script

log = logging.getLogger(__name__)


# What a store call raises when the store could not answer. A write to a transport closed under redis-py (a
# cluster node going away mid-handshake) raises uvloop's RuntimeError under redis-py 7, and redis-py's own
# ConnectionError (a RedisError) from 8 on: both are the store not answering.
STORE_ERRORS = (RedisError, OSError, RuntimeError)


class RedisStore:
    """The `Store` (interface.py) on Redis. `client` (redis-py) serves admin calls, health and refunds;
    `scripts` runs the batch script: the lean client on standalone Redis, redis-py otherwise."""

    def __init__(
        self, client: RedisPy, timeout: float = 0.05, cluster: bool = False, scripts: ScriptClient | None = None
    ) -> None:
        self.client = client
        self.redis_py = RedisPyScripts(client)
        self.scripts: ScriptClient = scripts or self.redis_py
        self.timeout = timeout
        self.cluster = cluster
        self.batch = Script(batch_script())
        self.refund = Script(refund_script())
        self.admin = Script(admin_script())

    async def evaluate(self, requests: Sequence[CheckBatch], now_us: int | None = None) -> BatchResult:
        try:
            if self.cluster:
                # Shielded: a caller cancelled mid-call (the coalescer sends an idle worker's lone request from
                # its caller's coroutine) must not stop the refund of a request that one slot denied.
                return await asyncio.shield(self._evaluate_by_slot(requests, now_us))
            return await self._call(requests, now_us)
        except STORE_ERRORS as err:
            raise StoreUnavailable(f"{type(err).__name__}: {err}") from err

    async def _call(self, requests: Sequence[CheckBatch], now_us: int | None) -> BatchResult:
        return decode_batch(await self.scripts.run_batch(self.batch, requests, now_us), requests)

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
            merged = combine([part for _, _, part in own], row)
            if not merged.admitted and not req.dry_run:  # undo what the parts that admitted have charged
                for idxs, charged_at, part in own:
                    if not part.admitted:
                        continue
                    charged = [i for i in idxs if row[i].admitted]
                    refunds.append(self._refund([req.checks[i] for i in charged], charged_at))
                    for i in charged:
                        row[i] = row[i]._replace(remaining=row[i].remaining + req.checks[i].args.cost)
            results.append(merged)
        if refunds:
            await asyncio.gather(*refunds)
        return BatchResult(now, results)

    async def _refund(self, checks: Sequence[Check], charged_at: int) -> None:
        if not checks:
            return
        receipt = f"{checks[0].key}:refund:{secrets.token_hex(8)}"
        args: list[Arg] = [charged_at]
        for c in checks:
            args.extend(c.args)
        await self.redis_py.run(self.refund, [receipt, *(c.key for c in checks)], args)

    async def delete(self, key: str) -> bool:
        """Forget one limit's state (admin reset)."""
        try:
            return bool(await self.client.delete(key))
        except STORE_ERRORS as err:
            raise StoreUnavailable(f"{type(err).__name__}: {err}") from err

    async def adjust_quota(self, check: Check, delta: int) -> tuple[int, int, int, int]:
        """Atomically add `delta` to this period's allowance: (remaining, used, granted, reset_after_us)."""
        try:
            raw = await self.redis_py.run(self.admin, [check.key], ["adjust_quota", delta, *check.args])
            if not isinstance(raw, list) or len(raw) != 4:
                raise ResponseError(f"unexpected reply from the admin script: {str(raw)[:200]}")
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
        if self.scripts is not self.redis_py:
            await self.scripts.close()
        await self.redis_py.close()
