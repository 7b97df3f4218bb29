"""RLQS demand, fair shares and charges in the store: one script call per bucket report (`lua/rlqs_share.lua`)."""

from __future__ import annotations

from ratelimitd.store.checks import Check
from ratelimitd.store.interface import ShareAnswer, StoreUnavailable
from ratelimitd.store.redis_store import STORE_ERRORS, RedisStore
from ratelimitd.store.script_call import Arg, Script
from ratelimitd.store.scripts import rlqs_script


class ShareStore:
    """The `ShareBackend` (interface.py) on Redis."""

    def __init__(self, store: RedisStore) -> None:
        self._scripts = store.redis_py
        self._script = Script(rlqs_script())

    async def report(
        self,
        check: Check,
        envoy: str,
        seen: int,
        allowed: int,
        rate: float,
        active_us: int,
        first_span_us: int,
        deny_when_spent: bool,
        now_us: int | None = None,
        window_us: int = 0,
    ) -> ShareAnswer:
        """Record this Envoy's demand (`seen` -1: only read), charge `allowed` to the rule's counter
        (`check.key`; the current window's part of it when the report spans more than `window_us`), and answer
        this Envoy's share with the counter's state."""
        args: list[Arg] = ["" if now_us is None else now_us, envoy, seen, repr(rate), active_us, first_span_us]
        args += [allowed, 1 if deny_when_spent else 0, window_us, *check.args]
        try:
            raw = await self._scripts.run(self._script, [check.key + ":rlqs", check.key], args)
        except STORE_ERRORS as err:
            raise StoreUnavailable(f"{type(err).__name__}: {err}") from err
        if not isinstance(raw, list) or len(raw) != 4:
            raise StoreUnavailable(f"unexpected reply from the share script: {str(raw)[:200]}")
        return ShareAnswer(int(raw[0]) / 1000, int(raw[1]), int(raw[2]), int(raw[3]))
