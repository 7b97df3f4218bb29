"""Keys known to be over their limit until a known time, answered without a store call.

Made safe, unlike envoyproxy/ratelimit's: only a denial of a cost-1 (or peek) request with nothing
remaining is cached, and only until the store said one unit would fit again (retry_after) and at most
one second (so admin resets and top-ups reach every worker quickly); an admit is never cached. The Redis key embeds the
rule's limit and unit, so a reloaded, changed rule never hits a stale entry.
"""

from __future__ import annotations

import time
from collections import OrderedDict


class OverLimitCache:
    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._until: OrderedDict[str, float] = OrderedDict()

    def remaining(self, key: str, now: float | None = None) -> float:
        """Seconds this key stays over its limit (0: not cached)."""
        until = self._until.get(key)
        if until is None:
            return 0.0
        left = until - (time.monotonic() if now is None else now)
        if left <= 0:
            del self._until[key]
            return 0.0
        return left

    def put(self, key: str, until: float) -> None:
        self._until[key] = until
        self._until.move_to_end(key)
        while len(self._until) > self.max_entries:
            self._until.popitem(last=False)

    def discard(self, key: str) -> None:
        self._until.pop(key, None)
