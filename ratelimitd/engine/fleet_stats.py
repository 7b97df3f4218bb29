"""The console's view of the whole fleet: each worker pushes what it counted once a second (never on the
request path), and the admin API reads every rule's traffic and top denied values back from the store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from ratelimitd.config.holder import ConfigHolder
from ratelimitd.engine.admin import describe_limit
from ratelimitd.metrics import Metrics
from ratelimitd.store.interface import StatsBackend, StoreUnavailable

log = logging.getLogger(__name__)

PUSH_SECONDS = 1.0


class FleetStats:
    def __init__(self, holder: ConfigHolder, backend: StatsBackend, metrics: Metrics) -> None:
        self.holder = holder
        self.backend = backend
        self.metrics = metrics

    async def push(self) -> None:
        counts, denied = self.metrics.take_fleet()
        # A store that does not answer loses a second of console statistics; the limits are not affected.
        with contextlib.suppress(StoreUnavailable):
            await self.backend.add(time.time(), counts, denied)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PUSH_SECONDS)
            try:
                await self.push()
            except Exception:
                log.exception("pushing fleet statistics failed")

    async def overview(self) -> dict[str, Any]:
        """Every rule in force, with its traffic series (see `FleetStatsStore.series`)."""
        now = time.time()
        series = await self.backend.series(now)
        rules = [
            {
                "domain": domain.name,
                "rule": rule.stats_key,
                "name": rule.name,
                "limit": describe_limit(rule),
                "series": series.get((domain.name, rule.stats_key), []),
            }
            for domain in sorted(self.holder.current.domains.values(), key=lambda d: d.name)
            for rule in domain.rules
        ]
        return {"now": now, "bucket_seconds": 10, "window_seconds": 900, "rules": rules}

    async def top_keys(self) -> dict[str, Any]:
        top = await self.backend.top(time.time())
        rules = [{"domain": d, "rule": r, "top": [[v, n] for v, n in values]} for (d, r), values in top.items()]
        return {"rules": rules}
