"""Group the checks of concurrent requests into few store calls (group commit).

A request goes out at once when a call slot is free (two calls may be out); the requests that arrive while
both are out pile up and leave together as the next call, so batches grow with the load itself and nobody
waits for a timer. On an idle worker (no call out) a lone request is sent by its caller's own coroutine, not by
a drain task: one loop round and one task less on the path a lightly loaded gateway waits for. Each request
stays all-or-nothing because the script evaluates the requests of a batch one after another.

A saturated worker is the exception: when the loop itself runs late (one round through its ready callbacks
takes longer than `SATURATED_LAG`), Redis answers faster than the worker takes in new RPCs, so nothing piles up
and tiny calls eat the CPU the RPCs need. Then, and only then, the next call waits for company, in short steps
up to `SATURATED_LINGER`. The signal is measured, not assumed: a worker with spare CPU never waits.

Opt-in (`linger`, `--batch-linger`): under any load (more than one request held, queued or in a call) the next
call lingers in steps of a quarter of `linger` while requests keep arriving. It trades latency for fewer store
calls: on loopback it added ~1 ms at light load (docs/performance.md); it may pay off against a remote Redis
whose round trip dominates.

Every store call has a deadline (the store timeout): when it passes, the call's requests are answered with
`StoreUnavailable` (the failure mode) and the slot serves the next batch, so a slow or dead store never
holds a backlog for long. Waiting for a slot is not timed by the store timeout: on a worker that is simply
busy, requests are decided late rather than let through unchecked; that wait has its own, longer bound, the
queue is bounded in length, and a caller that gives up (gRPC deadline, closed HTTP connection) cancels its
request, which then leaves the queue unsent.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

from ratelimitd.metrics import Metrics
from ratelimitd.store.checks import CheckBatch
from ratelimitd.store.interface import BatchResult, RequestResult, StoreUnavailable

# GIL switch interval while the idle loop spins (the default, 5 ms, returns when it stops). Measured at one
# request in flight: p50 ~1.0 ms against ~1.1-1.9 ms without the spin; with the spin but the default
# interval, no gain (gRPC's poller waits for the GIL). Kept off under load, where it costs throughput.
SPIN_SWITCH_INTERVAL = 0.0002

# The idle spin runs only on a worker that has held no more than one request at a time for this long (s): a
# lone call on a busy worker (8 in flight, say) is not idleness, and spinning there takes the CPU that the
# store, gRPC's threads and the clients need (measured: README, Performance).
IDLE_QUIET = 0.1

# A loop round slower than this means the worker is saturated (see the module docstring); then a call waits for
# company up to SATURATED_LINGER. Measured at an open-loop 12,500 checks/s on this 2-core VM: with no linger at
# all the service answered 8,537-8,763/s with ~2 requests per store call, with a 5 ms linger 10,869-11,900/s,
# with this rule 10,937/s; at 500 and 2,000/s the rule adds nothing (p50 +0.83/+1.10 ms over the bare server
# against +1.25/+2.65 with the 5 ms linger). A 1 ms threshold did not trigger at one descriptor per request.
SATURATED_LAG = 0.0003
SATURATED_LINGER = 0.002

Runner = Callable[[Sequence[CheckBatch]], Awaitable[BatchResult]]
# (store time in us, position of the request in its batch, its result): the first two order decisions.
Answer = tuple[int, int, RequestResult]


class _Call:
    """One store call that is out; `given_up` once its deadline passed and its requests were answered.
    `caller`: the task sending it when that is the request's own caller (see `Coalescer._send_alone`)."""

    __slots__ = ("batch", "caller", "done", "given_up", "started")

    def __init__(
        self, batch: list[tuple[CheckBatch, asyncio.Future[Answer]]], caller: asyncio.Task[object] | None = None
    ) -> None:
        self.batch = batch
        self.caller = caller
        self.started = time.perf_counter()
        self.done = False
        self.given_up = False


def _fail(batch: list[tuple[CheckBatch, asyncio.Future[Answer]]], err: Exception) -> None:
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(err)


class Coalescer:
    def __init__(
        self,
        run: Runner,
        timeout: float = 0.05,
        max_batch: int = 128,
        max_in_flight: int = 2,
        max_queue: int = 10_000,
        metrics: Metrics | None = None,
        linger: float = 0.0,
        idle_spin: float = 0.001,
    ) -> None:
        self._metrics = metrics
        self._observed = (
            (metrics.histogram(metrics.store_latency), metrics.histogram(metrics.batch_size)) if metrics else None
        )
        # Linger only under load (more than one request held, see _busy); zero when idle.
        self._linger = linger
        self._out = 0  # requests in calls that are out
        self._run = run
        self._timeout = timeout
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._max_queue = max_queue
        # A request may wait this long for a call slot (a store that keeps timing out, a starved worker);
        # gRPC and HTTP callers that give up earlier cancel their request, which then leaves the queue unsent.
        self._max_wait = max(10 * timeout, 0.5)
        self._queue: list[tuple[CheckBatch, asyncio.Future[Answer], float]] = []
        self._in_flight = 0
        self._gathering = False  # one drain at a time lingers; the other's call is out meanwhile
        self._drains: set[asyncio.Task[None]] = set()
        self._idle_spin = idle_spin
        self._spin_until = 0.0
        self._concurrent_at = -IDLE_QUIET  # when this worker last held more than one request
        self._switch_interval = sys.getswitchinterval()

    async def submit(self, checks: CheckBatch) -> Answer:
        if len(self._queue) >= self._max_queue:
            raise StoreUnavailable("store queue full")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Answer] = loop.create_future()
        now = loop.time()
        self._queue.append((checks, fut, now))
        if self._busy():
            self._concurrent_at = now  # not idle: no idle spin for a while (see _send)
        if self._in_flight == 0 and len(self._queue) == 1 and not self._gathering:
            await self._send_alone()
        elif self._in_flight < self._max_in_flight and not self._gathering:
            self._start_drain()
        return await fut

    async def _send_alone(self) -> None:
        """Send the lone queued request from the caller's coroutine (measured at 500 and 2,000 checks/s: p50
        0.15-0.35 ms lower than through a drain task). At the deadline `_give_up` answers the request and
        cancels the caller's wait for the store, which this absorbs; a cancellation from elsewhere (the
        gateway's deadline) goes on. Either way the call is abandoned: the store's calls are safe to cancel."""
        checks, fut, _ = self._queue.pop()
        self._in_flight += 1
        caller = asyncio.current_task()
        call = _Call([(checks, fut)], caller)
        try:
            await self._send(call)
        except asyncio.CancelledError:
            if not (call.given_up and caller is not None and caller.uncancel() == 0):
                raise
        finally:
            if not call.given_up:  # else `_give_up` has handed the slot on
                self._in_flight -= 1
        if self._queue and self._in_flight < self._max_in_flight and not self._gathering:
            self._start_drain()

    def _start_drain(self) -> None:
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._drain())
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    async def _drain(self) -> None:
        slot_held = True
        try:
            while self._queue:
                if self._gathering:
                    return  # another drain is gathering this queue and will send it
                linger = self._linger if self._busy() else 0.0
                if self._busy() and not linger:
                    # Under load, one loop round first: it lets in what grpc already holds, and its length says
                    # whether the worker is saturated (a long ready queue), the only case that waits for company.
                    started = time.perf_counter()
                    await asyncio.sleep(0)
                    if self._gathering:
                        return
                    if time.perf_counter() - started > SATURATED_LAG and self._busy():
                        linger = SATURATED_LINGER
                if linger:
                    self._gathering = True
                    try:
                        await self._fill(linger)
                    finally:
                        self._gathering = False
                taken = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                oldest = asyncio.get_running_loop().time() - self._max_wait
                batch: list[tuple[CheckBatch, asyncio.Future[Answer]]] = []
                for checks, fut, queued_at in taken:
                    if fut.done():  # its caller gave up (cancelled)
                        continue
                    if queued_at < oldest:
                        fut.set_exception(StoreUnavailable("no store call slot in time"))
                        continue
                    batch.append((checks, fut))
                if batch and not await self._send(_Call(batch)):
                    slot_held = False  # the call was given up and its slot handed to a new drain
                    return
        finally:
            if slot_held:
                self._in_flight -= 1

    async def _fill(self, linger: float) -> None:
        """Under load, wait in short steps while requests keep arriving, at most `linger` in all: a step in
        which nobody arrives means the callers are all in, so waiting longer would only add latency.

        An empty step is confirmed over a few more loop rounds: a worker starved of CPU runs its timers before
        it reads its sockets (uvloop), and a new RPC takes several rounds from grpc's poller to `submit`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + linger
        step = linger / 4
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
        if not self._spin_until:
            return
        if self._queue or time.perf_counter() >= self._spin_until:
            self._stop_spin()  # another request arrived (not idle after all), or the budget is spent
            return
        asyncio.get_running_loop().call_soon(self._spin)

    def _stop_spin(self) -> None:
        if self._spin_until:
            self._spin_until = 0.0
            sys.setswitchinterval(self._switch_interval)

    def _busy(self) -> bool:
        """Load, as the requests this worker holds: one alone (idle) goes out at once; any more, and the next
        call waits for company. Requests already in a call count, or a worker that once sent single requests
        would keep sending them one by one under any load."""
        return self._out + len(self._queue) > 1

    async def _send(self, call: _Call) -> bool:
        """Send one call; False when its deadline passed first (its requests were answered then)."""
        loop = asyncio.get_running_loop()
        batch = call.batch
        self._out += len(batch)
        idle = loop.time() - self._concurrent_at > IDLE_QUIET
        if self._idle_spin and idle and len(batch) == 1 and self._in_flight == 1 and not self._queue:
            self._spin_until = call.started + self._idle_spin
            sys.setswitchinterval(SPIN_SWITCH_INTERVAL)
            loop.call_soon(self._spin)
        # The deadline times the call, not the wait for a slot. It is a timer rather than a task wrapping the
        # call: under load every extra hop through the ready queue is a full, long loop iteration.
        timer = loop.call_later(self._timeout, self._give_up, call)
        err: Exception | None = None
        try:
            result = await self._run([checks for checks, _ in batch])
        except TimeoutError:
            err = StoreUnavailable("store timeout")
        except Exception as e:
            err = e
        finally:
            call.done = True
            timer.cancel()
            self._stop_spin()
            if not call.given_up:
                self._out -= len(batch)
        if call.given_up:
            return False  # too late: the requests were answered by the failure mode; drop the result
        self._observe(call, err)
        if err is not None:
            _fail(batch, err)
            return True
        for seq, ((_, fut), row) in enumerate(zip(batch, result.results, strict=True)):
            if not fut.done():
                fut.set_result((result.now_us, seq, row))
        return True

    def _give_up(self, call: _Call, hops: int = 2) -> None:
        """The call's deadline passed: answer its requests with the failure mode, and hand its slot to a new
        drain so the queue moves on while the call hangs (the store client's own timeout ends it; it is not
        cancelled, since a cluster call may be refunding a partial reservation).

        First a couple of rounds through the ready queue: a worker stalled past the deadline (CPU starved)
        runs due timers before the task that its store's reply, read meanwhile, has woken (uvloop)."""
        if call.done:
            return
        if hops:
            asyncio.get_running_loop().call_soon(self._give_up, call, hops - 1)
            return
        call.given_up = True
        self._out -= len(call.batch)
        err = StoreUnavailable("store timeout")
        self._observe(call, err)
        _fail(call.batch, err)
        if call.caller is not None:
            call.caller.cancel()  # it waits for the store; its answer is set (see `_send_alone`)
        self._stop_spin()
        self._in_flight -= 1
        if self._queue and self._in_flight < self._max_in_flight and not self._gathering:
            self._start_drain()

    def _observe(self, call: _Call, err: Exception | None) -> None:
        if self._observed is not None:
            latency, sizes = self._observed
            latency.observe(time.perf_counter() - call.started)
            sizes.observe(len(call.batch))
        if err is not None and self._metrics is not None:
            self._metrics.store_errors.inc()
