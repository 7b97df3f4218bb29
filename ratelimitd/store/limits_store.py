"""Limits kept in the store: each domain's YAML with its version, a bounded history, and one generation counter.

All keys share the hash tag `{limits}`, so on a Redis Cluster they sit in one slot and every change is one
atomic script call (`lua/limits.lua`): the compare-and-set on the version, the history entry and the new
generation. Instances learn of changes by polling the generation (one GET), which is why a change needs no
message to arrive: see `engine/stored_limits.py`. This module knows YAML only as text.
"""

from __future__ import annotations

import json
from typing import Any

from ratelimitd.store.interface import StoredDomain, StoreUnavailable, WriteResult
from ratelimitd.store.redis_store import STORE_ERRORS, RedisStore
from ratelimitd.store.script_call import Arg, Script
from ratelimitd.store.scripts import read_lua

HISTORY_LENGTH = 50


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry(domain: str, raw: Any) -> StoredDomain:
    d = json.loads(_text(raw))
    return StoredDomain(
        domain,
        int(d["version"]),
        int(d["time_ms"]),
        str(d["who"]),
        str(d["summary"]),
        str(d["yaml"]),
        str(d["action"]),
    )


class LimitsStore:
    """The `LimitsBackend` (interface.py) on Redis."""

    def __init__(self, store: RedisStore, prefix: str = "rl:") -> None:
        self._client = store.client
        self._scripts = store.redis_py
        self._script = Script(read_lua("limits.lua"))
        self.domains_key = f"{prefix}{{limits}}:domains"
        self.generation_key = f"{prefix}{{limits}}:generation"
        self._history_prefix = f"{prefix}{{limits}}:history:"

    def history_key(self, domain: str) -> str:
        return self._history_prefix + domain

    async def generation(self) -> int | None:
        """The generation, or None if the store has none (never written, or lost)."""
        try:
            raw = await self._client.get(self.generation_key)
        except STORE_ERRORS as err:
            raise StoreUnavailable(f"{type(err).__name__}: {err}") from err
        return None if raw is None else int(raw)

    async def read_all(self) -> tuple[int | None, dict[str, StoredDomain]]:
        """The generation and every current domain, read together (one MULTI, so they agree)."""
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.get(self.generation_key)
                pipe.hgetall(self.domains_key)
                gen, raw = await pipe.execute()
        except STORE_ERRORS as err:
            raise StoreUnavailable(f"{type(err).__name__}: {err}") from err
        domains = {_text(k): _entry(_text(k), v) for k, v in (raw or {}).items()}
        return (None if gen is None else int(gen)), domains

    async def get(self, domain: str) -> StoredDomain | None:
        try:
            raw = await self._client.hget(self.domains_key, domain)
        except STORE_ERRORS as err:
            raise StoreUnavailable(f"{type(err).__name__}: {err}") from err
        return None if raw is None else _entry(domain, raw)

    async def history(self, domain: str) -> list[StoredDomain]:
        """Newest first, at most HISTORY_LENGTH entries."""
        try:
            raw = await self._client.lrange(self.history_key(domain), 0, HISTORY_LENGTH - 1)
        except STORE_ERRORS as err:
            raise StoreUnavailable(f"{type(err).__name__}: {err}") from err
        return [_entry(domain, r) for r in raw]

    async def write(
        self, domain: str, precondition: str, yaml_text: str | None, who: str, summary: str, action: str
    ) -> WriteResult:
        """Put (`yaml_text`) or delete (None) `domain` if `precondition` holds: '*' = must not exist, else
        the version the caller read."""
        keys = [self.domains_key, self.history_key(domain), self.generation_key]
        op = "delete" if yaml_text is None else "put"
        args: list[Arg] = [op, domain, precondition, who, summary, yaml_text or "", action, HISTORY_LENGTH]
        try:
            raw = await self._scripts.run(self._script, keys, args)
        except STORE_ERRORS as err:
            raise StoreUnavailable(f"{type(err).__name__}: {err}") from err
        if not isinstance(raw, list) or len(raw) < 2:
            raise StoreUnavailable(f"unexpected reply from the limits script: {str(raw)[:200]}")
        return WriteResult(_text(raw[0]), int(raw[1]))

    async def raise_generation(self, floor: int) -> int:
        """Set the generation to at least `floor`; the generation now."""
        keys = [self.domains_key, self.history_key(""), self.generation_key]
        try:
            raw = await self._scripts.run(self._script, keys, ["raise", floor])
        except STORE_ERRORS as err:
            raise StoreUnavailable(f"{type(err).__name__}: {err}") from err
        if not isinstance(raw, list) or len(raw) < 2:
            raise StoreUnavailable(f"unexpected reply from the limits script: {str(raw)[:200]}")
        return int(raw[1])
