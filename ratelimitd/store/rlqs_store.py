"""RLQS demand and fair shares in the store: one script call per bucket report (`lua/rlqs_share.lua`)."""

from __future__ import annotations

from ratelimitd.store.interface import StoreUnavailable
from ratelimitd.store.redis_store import STORE_ERRORS, RedisStore
from ratelimitd.store.script_call import Script
from ratelimitd.store.scripts import read_lua


class ShareStore:
    """The `ShareBackend` (interface.py) on Redis."""

    def __init__(self, store: RedisStore) -> None:
        self._scripts = store.redis_py
        self._script = Script(read_lua("rlqs_share.lua"))

    async def report(
        self,
        key: str,
        envoy: str,
        seen: int,
        rate: float,
        active_us: int,
        first_span_us: int,
        now_us: int | None = None,
    ) -> tuple[float, int, int]:
        """This Envoy's share (requests per second), the active Envoys and the busy ones, for one bucket."""
        args = ["" if now_us is None else now_us, envoy, seen, repr(rate), active_us, first_span_us]
        try:
            raw = await self._scripts.run(self._script, [key], args)
        except STORE_ERRORS as err:
            raise StoreUnavailable(f"{type(err).__name__}: {err}") from err
        if not isinstance(raw, list) or len(raw) != 3:
            raise StoreUnavailable(f"unexpected reply from the share script: {str(raw)[:200]}")
        return int(raw[0]) / 1000, int(raw[1]), int(raw[2])
