"""Traffic per rule and the descriptor values denied most often, for the whole fleet sharing the store.

Each worker adds what it counted (in memory, `Metrics.take_fleet`) at most once a second in one pipeline, off
the request path: per rule, allowed / over limit / near limit / shadow-denied hits into 10-second buckets (one
hash per bucket), and per rule the denied values into one sorted set per minute, trimmed to the
`KEEP_TOP` largest after every addition, so memory stays bounded whatever callers send. Everything expires
after the 15 minutes the console shows, and all keys share the hash tag `{stats}` (one Cluster slot, so ZUNION
works)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ratelimitd.store.interface import StoreUnavailable
from ratelimitd.store.redis_store import STORE_ERRORS, RedisStore

BUCKET = 10
TOP_BUCKET = 60
WINDOW = 900
KEEP_TOP = 200
STATS = ("a", "o", "n", "s")  # allowed, over limit, near limit (also allowed), shadow-denied
SEP = "\x1f"

RuleId = tuple[str, str]  # (domain, stats key)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _window(now: float, size: int) -> list[int]:
    """Starts of the buckets of `size` seconds covering the last WINDOW seconds, the current one last."""
    last = int(now // size) * size
    return list(range(last - WINDOW + size, last + size, size))


class FleetStatsStore:
    """The `StatsBackend` (interface.py) on Redis."""

    def __init__(self, store: RedisStore, prefix: str = "rl:") -> None:
        self._client = store.client
        self._prefix = f"{prefix}{{stats}}:"

    async def add(
        self, now: float, counts: Mapping[RuleId, list[int]], denied: Mapping[RuleId, Mapping[str, int]]
    ) -> None:
        if not counts and not denied:
            return
        bucket = int(now // BUCKET) * BUCKET
        minute = int(now // TOP_BUCKET) * TOP_BUCKET
        pipe = self._client.pipeline(transaction=False)
        if counts:
            hkey = f"{self._prefix}t:{bucket}"
            for (domain, rule), numbers in counts.items():
                for stat, n in zip(STATS, numbers, strict=True):
                    if n:
                        pipe.hincrby(hkey, f"{domain}{SEP}{rule}{SEP}{stat}", n)
            pipe.expire(hkey, WINDOW + 2 * BUCKET)
        if denied:
            rules_key = f"{self._prefix}top-rules:{minute}"
            for (domain, rule), values in denied.items():
                rid = f"{domain}{SEP}{rule}"
                zkey = f"{self._prefix}top:{minute}:{rid}"
                for value, n in values.items():
                    pipe.zincrby(zkey, n, value)
                pipe.zremrangebyrank(zkey, 0, -KEEP_TOP - 1)
                pipe.expire(zkey, WINDOW + 2 * TOP_BUCKET)
                pipe.sadd(rules_key, rid)
            pipe.expire(rules_key, WINDOW + 2 * TOP_BUCKET)
        try:
            await pipe.execute()
        except STORE_ERRORS as err:
            raise StoreUnavailable(f"{type(err).__name__}: {err}") from err

    async def _each(self, command: str, keys: Sequence[Any], *args: Any) -> list[Any]:
        """One pipelined `command` per key, the answers in order."""
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    getattr(pipe, command)(key, *args)
                return list(await pipe.execute())
        except STORE_ERRORS as err:
            raise StoreUnavailable(f"{type(err).__name__}: {err}") from err

    async def series(self, now: float) -> dict[RuleId, list[list[int]]]:
        """Per rule, [bucket start, allowed, over, near, shadow] for every 10-second bucket of the last 15
        minutes that has any, oldest first; the last one is the current (partial) bucket."""
        starts = _window(now, BUCKET)
        answers = await self._each("hgetall", [f"{self._prefix}t:{start}" for start in starts])
        out: dict[RuleId, list[list[int]]] = {}
        for start, fields in zip(starts, answers, strict=True):
            rows: dict[RuleId, list[int]] = {}
            for field, n in (fields or {}).items():
                domain, rule, stat = _text(field).split(SEP)
                rows.setdefault((domain, rule), [start, 0, 0, 0, 0])[1 + STATS.index(stat)] = int(n)
            for rid, row in rows.items():
                out.setdefault(rid, []).append(row)
        return out

    async def top(self, now: float, n: int = 20) -> dict[RuleId, list[tuple[str, int]]]:
        """Per rule, the `n` values denied most often in the last 15 minutes, most first."""
        minutes = _window(now, TOP_BUCKET)
        members = await self._each("smembers", [f"{self._prefix}top-rules:{m}" for m in minutes])
        rids = sorted({_text(r) for group in members for r in group})
        per_rule = [[f"{self._prefix}top:{m}:{rid}" for m in minutes] for rid in rids]
        unions = await self._each("zunion", per_rule, None, True)  # (keys, aggregate, withscores)
        out: dict[RuleId, list[tuple[str, int]]] = {}
        for rid, union in zip(rids, unions, strict=True):
            domain, rule = rid.split(SEP)
            ranked = sorted(((_text(v), int(s)) for v, s in union), key=lambda p: (-p[1], p[0]))
            out[(domain, rule)] = ranked[:n]
        return out
