"""Group the checks of requests that arrive while a store call is in flight into the next call.

No timer: when idle a request goes out at once; under load the queue fills while a call is out, so
the number of store round trips per check falls as load rises. Each request stays all-or-nothing
because the script evaluates the requests of a batch one after another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from ratelimitd.store.checks import CheckBatch
from ratelimitd.store.redis_store import BatchResult, CheckResult

Runner = Callable[[Sequence[CheckBatch]], Awaitable[BatchResult]]


class Coalescer:
    def __init__(self, run: Runner, max_batch: int = 128, max_in_flight: int = 2) -> None:
        self._run = run
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._queue: list[tuple[CheckBatch, asyncio.Future[tuple[int, list[CheckResult]]]]] = []
        self._in_flight = 0

    async def submit(self, checks: CheckBatch) -> tuple[int, list[CheckResult]]:
        fut: asyncio.Future[tuple[int, list[CheckResult]]] = asyncio.get_running_loop().create_future()
        self._queue.append((checks, fut))
        if self._in_flight < self._max_in_flight:
            self._in_flight += 1
            asyncio.get_running_loop().create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                try:
                    result = await self._run([checks for checks, _ in batch])
                except Exception as err:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(err)
                    continue
                for (_, fut), row in zip(batch, result.results, strict=True):
                    if not fut.done():
                        fut.set_result((result.now_us, row))
        finally:
            self._in_flight -= 1
