"""Group the checks of concurrent requests into few store calls (group commit with an adaptive linger).

When idle a request goes out at once, alone. Under load (the last call carried several requests, or several
are waiting) the next call lingers in steps of a quarter of `linger` while requests keep arriving, up to
`linger` in all: grpc.aio hands the service one RPC per loop iteration, so only time gathers a batch, and on a
CPU-bound worker fewer calls mean more checks per second (measured: README, Performance). Each request stays
all-or-nothing because the script evaluates the requests of a batch one after another.

Every request has a deadline (the store timeout): it is answered with `StoreUnavailable` when the
deadline passes, whether it is still queued or its call is slow, so a slow or dead store never builds
an unbounded backlog; the queue itself is bounded too.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

from ratelimitd.metrics import Metrics
from ratelimitd.store.checks import CheckBatch
from ratelimitd.store.redis_store import BatchResult, CheckResult, StoreUnavailable

# GIL switch interval while the idle loop spins (the default, 5 ms, returns when it stops). Measured at one
# request in flight: p50 ~1.0 ms against ~1.1-1.9 ms without the spin; with the spin but the default
# interval, no gain (gRPC's poller waits for the GIL). Kept off under load, where it costs throughput.
SPIN_SWITCH_INTERVAL = 0.0002

Runner = Callable[[Sequence[CheckBatch]], Awaitable[BatchResult]]
# (store time in us, position of the request in its batch, results): the first two order decisions.
Answer = tuple[int, int, list[CheckResult]]


def _expire(fut: asyncio.Future[Answer], hops: int = 3) -> None:
    """The deadline passed. Answer only after a few more ready-queue rounds: when the worker was starved of
    CPU, its timers run before its I/O is read (uvloop), and the store's reply may be waiting in the socket;
    the rounds let the loop poll, read it and wake the batch's task before this request is given up."""
    if fut.done():
        return
    if hops:
        fut.get_loop().call_soon(_expire, fut, hops - 1)
    else:
        fut.set_exception(StoreUnavailable("store timeout"))


class Coalescer:
    def __init__(
        self,
        run: Runner,
        timeout: float = 0.05,
        max_batch: int = 128,
        max_in_flight: int = 2,
        max_queue: int = 10_000,
        metrics: Metrics | None = None,
        linger: float = 0.005,
        idle_spin: float = 0.001,
    ) -> None:
        self._metrics = metrics
        # Linger only under load (several requests waiting or every call slot busy); zero when idle.
        self._linger = linger
        self._last_batch = 0
        self._run = run
        self._timeout = timeout
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._max_queue = max_queue
        self._queue: list[tuple[CheckBatch, asyncio.Future[Answer]]] = []
        self._in_flight = 0
        self._gathering = False  # one drain at a time lingers; the other's call is out meanwhile
        self._drains: set[asyncio.Task[None]] = set()
        self._idle_spin = idle_spin
        self._spin_until = 0.0
        self._switch_interval = sys.getswitchinterval()

    async def submit(self, checks: CheckBatch) -> Answer:
        if len(self._queue) >= self._max_queue:
            raise StoreUnavailable("store queue full")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Answer] = loop.create_future()
        timer = loop.call_later(self._timeout, _expire, fut)
        self._queue.append((checks, fut))
        if self._in_flight < self._max_in_flight and not self._gathering:
            self._in_flight += 1
            task = loop.create_task(self._drain())
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)
        try:
            return await fut
        finally:
            timer.cancel()

    async def _drain(self) -> None:
        try:
            while self._queue:
                if self._gathering:
                    return  # another drain is gathering this queue and will send it
                if self._linger and self._busy():
                    self._gathering = True
                    try:
                        await self._fill()
                    finally:
                        self._gathering = False
                batch = [item for item in self._queue[: self._max_batch] if not item[1].done()]
                del self._queue[: self._max_batch]
                if batch:
                    await self._send(batch)
        finally:
            self._in_flight -= 1

    async def _fill(self) -> None:
        """Under load, wait in short steps while requests keep arriving, at most `linger` in all: a step in
        which nobody arrives means the callers are all in, so waiting longer would only add latency.

        An empty step is confirmed over a few more loop rounds: a worker starved of CPU runs its timers before
        it reads its sockets (uvloop), and a new RPC takes several rounds from grpc's poller to `submit`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._linger
        step = self._linger / 4
        while len(self._queue) < self._max_batch and (left := deadline - loop.time()) > 0:
            before = len(self._queue)
            await asyncio.sleep(min(step, left))
            for _ in range(4):
                if len(self._queue) != before:
                    break
                await asyncio.sleep(0)
            else:
                return

    def _spin(self) -> None:
        """Keep the idle loop polling (epoll with no timeout) while a lone call is out, for at most
        `idle_spin`: a thread that sleeps in epoll is woken by the reply only after the scheduler (and on a
        VM, the hypervisor) brings its CPU back, which costs more than the round trip itself (measured here:
        a Redis PING from the loop takes ~0.2-0.45 ms at p50 when sleeping, ~0.12 ms when polling). Only
        when nothing else is waiting, so it spends idle CPU only. While it spins the GIL switch interval is
        short, or gRPC's polling thread would wait up to 5 ms for the GIL to hand over its events."""
        if time.perf_counter() < self._spin_until:
            asyncio.get_running_loop().call_soon(self._spin)

    def _busy(self) -> bool:
        return self._last_batch > 1 or len(self._queue) > 1

    async def _send(self, batch: list[tuple[CheckBatch, asyncio.Future[Answer]]]) -> None:
        self._last_batch = len(batch)
        started = time.perf_counter()
        err: Exception | None = None
        if self._idle_spin and len(batch) == 1 and self._in_flight == 1 and not self._queue:
            self._spin_until = started + self._idle_spin
            sys.setswitchinterval(SPIN_SWITCH_INTERVAL)
            asyncio.get_running_loop().call_soon(self._spin)
        try:
            result = await self._run([checks for checks, _ in batch])
        except TimeoutError:
            err = StoreUnavailable("store timeout")
        except Exception as e:
            err = e
        finally:
            if self._spin_until:
                sys.setswitchinterval(self._switch_interval)
            self._spin_until = 0.0
        if self._metrics is not None:
            self._metrics.store_latency.observe(time.perf_counter() - started)
            self._metrics.batch_size.observe(len(batch))
            if err is not None:
                self._metrics.store_errors.inc()
        if err is not None:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(err)
            return
        for seq, ((_, fut), row) in enumerate(zip(batch, result.results, strict=True)):
            if not fut.done():
                fut.set_result((result.now_us, seq, row))
