"""The coalescer's scheduling: who shares a store call, when a call leaves, and when a request gives up.

The runner here is a plain coroutine standing in for `RedisStore.evaluate`, so the timing of each call is
under the test's control; the store itself is exercised by the integration and property suites. The event
loop's clock is virtual (looptime): sleeps and timeouts take no real time, and the times asserted are exact.
Only the idle spin and the starved-loop test run on the real clock, because real time is their subject.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Sequence

import pytest
import uvloop

from ratelimitd.scheduler import coalescer
from ratelimitd.scheduler.coalescer import SPIN_SWITCH_INTERVAL, Answer, Coalescer
from ratelimitd.store.checks import Check, CheckArgs, CheckBatch
from ratelimitd.store.interface import BatchResult, CheckResult, RequestResult, StoreUnavailable

pytestmark = pytest.mark.looptime


def now() -> float:
    return asyncio.get_running_loop().time()


def batch(n: int = 1) -> CheckBatch:
    return CheckBatch(tuple(Check(f"k{i}", CheckArgs(1, 10, 1, 1, 0, 1, 0, 0)) for i in range(n)))


def admitted(request: CheckBatch) -> RequestResult:
    return RequestResult(True, 0, 0, 0, [CheckResult(True, 1, 0, 0) for _ in request.checks])


class Runner:
    """Records each call's size; each call waits `delay` seconds (or for `release`)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[int] = []
        self.release: asyncio.Event | None = None

    def let_go(self) -> None:
        assert self.release is not None
        self.release.set()

    async def __call__(self, requests: Sequence[CheckBatch]) -> BatchResult:
        self.calls.append(len(requests))
        if self.release is not None:
            await self.release.wait()
        elif self.delay:
            await asyncio.sleep(self.delay)
        return BatchResult(7, [admitted(r) for r in requests])


async def hold_a_call(co: Coalescer, run: Runner) -> asyncio.Future[Answer]:
    """Put one request in a call that stays out until `run.let_go()`; return its answer to come."""
    run.release = asyncio.Event()
    first: asyncio.Future[Answer] = asyncio.ensure_future(co.submit(batch()))
    await asyncio.sleep(0.01)
    return first


async def submit_while_held(co: Coalescer, n: int) -> list[asyncio.Future[Answer]]:
    rest: list[asyncio.Future[Answer]] = [asyncio.ensure_future(co.submit(batch())) for _ in range(n)]
    await asyncio.sleep(0.01)
    return rest


async def test_an_idle_request_leaves_at_once_alone() -> None:
    run = Runner(delay=0.001)
    co = Coalescer(run, timeout=1.0, linger=0.5, idle_spin=0.0)
    started = now()
    now_us, seq, result = await co.submit(batch(2))
    assert now() - started == pytest.approx(0.001)  # the call's own time: no linger when nobody else waits
    assert (now_us, seq, len(result.checks)) == (7, 0, 2)
    assert run.calls == [1]


async def test_requests_arriving_during_a_call_share_the_next_one() -> None:
    run = Runner()
    co = Coalescer(run, timeout=5.0, max_in_flight=1, linger=0.0)
    first = await hold_a_call(co, run)
    rest = await submit_while_held(co, 5)
    run.let_go()
    answers = await asyncio.gather(first, *rest)
    assert run.calls == [1, 5]
    assert sorted(seq for _, seq, _ in answers[1:]) == [0, 1, 2, 3, 4]  # positions within the shared call


async def test_batches_are_bounded() -> None:
    run = Runner()
    co = Coalescer(run, timeout=5.0, max_in_flight=1, max_batch=3, linger=0.0)
    first = await hold_a_call(co, run)
    rest = await submit_while_held(co, 7)
    run.let_go()
    await asyncio.gather(first, *rest)
    assert run.calls == [1, 3, 3, 1]


async def test_under_load_the_linger_gathers_requests_that_keep_arriving() -> None:
    run = Runner(delay=0.005)
    co = Coalescer(run, timeout=5.0, max_in_flight=1, linger=0.2, idle_spin=0.0)

    async def stream() -> None:
        tasks = []
        for _ in range(40):
            tasks.append(asyncio.ensure_future(co.submit(batch())))
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)

    await stream()
    # a request every 2 ms for 80 ms: the first goes alone; the next call lingers in 50 ms steps while they
    # keep coming (the 200 ms linger outlasts the stream), so it carries all the rest. Without the linger each
    # call would carry 2 or 3.
    assert run.calls == [1, 39]


async def test_the_linger_ends_when_callers_stop_arriving() -> None:
    run = Runner()
    co = Coalescer(run, timeout=5.0, max_in_flight=1, linger=1.0, idle_spin=0.0)
    first = await hold_a_call(co, run)
    rest = await submit_while_held(co, 3)
    started = now()
    run.let_go()
    await asyncio.gather(first, *rest)
    # the busy call lingers one step (linger / 4) in which nobody arrives, not the whole second
    assert now() - started == pytest.approx(0.25)
    assert run.calls == [1, 3]


async def test_a_hung_store_is_answered_at_the_deadline() -> None:
    run = Runner()
    run.release = asyncio.Event()  # never set
    co = Coalescer(run, timeout=0.05, linger=0.0, idle_spin=0.0)
    started = now()
    with pytest.raises(StoreUnavailable, match="store timeout"):
        await co.submit(batch())
    assert now() - started == pytest.approx(0.05)  # at the deadline, not later
    run.let_go()


async def test_a_full_queue_refuses_at_once() -> None:
    run = Runner()
    co = Coalescer(run, timeout=5.0, max_in_flight=1, max_queue=2, linger=0.0)
    first = await hold_a_call(co, run)
    waiting = [first, *await submit_while_held(co, 2)]  # the next two fill the queue
    with pytest.raises(StoreUnavailable, match="queue full"):
        await co.submit(batch())
    run.let_go()
    await asyncio.gather(*waiting)


def test_a_reply_waiting_in_the_socket_beats_a_deadline_missed_by_a_starved_loop() -> None:
    """The worker stalls past the deadline while the store's reply is already readable: the reply wins.
    Run on uvloop (as the service is), whose loop runs due timers before it reads sockets."""

    async def scenario() -> int:
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=ours)

        async def over_a_socket(requests: Sequence[CheckBatch]) -> BatchResult:
            await reader.readexactly(1)
            return BatchResult(1, [admitted(r) for r in requests])

        co = Coalescer(over_a_socket, timeout=0.02, linger=0.0, idle_spin=0.0)
        pending = asyncio.ensure_future(co.submit(batch()))
        await asyncio.sleep(0.005)
        theirs.send(b"x")
        time.sleep(0.05)  # noqa: ASYNC251  (the point: the loop is starved past the deadline)
        now_us = (await pending)[0]
        writer.close()
        theirs.close()
        return now_us

    assert uvloop.run(scenario()) == 1


async def test_a_lone_call_spins_with_a_short_switch_interval_and_restores_it() -> None:
    seen: list[float] = []
    default = sys.getswitchinterval()

    async def observing(requests: Sequence[CheckBatch]) -> BatchResult:
        seen.append(sys.getswitchinterval())
        await asyncio.sleep(0.002)
        return BatchResult(1, [admitted(r) for r in requests])

    co = Coalescer(observing, timeout=1.0, linger=0.0)
    await co.submit(batch())
    assert seen == [pytest.approx(SPIN_SWITCH_INTERVAL)]
    assert sys.getswitchinterval() == default
    # under load (several waiting) nothing spins
    seen.clear()
    await asyncio.gather(*(co.submit(batch()) for _ in range(6)))
    assert default in seen and sys.getswitchinterval() == default


async def test_a_lone_call_on_a_worker_that_was_just_busy_does_not_spin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coalescer, "IDLE_QUIET", 0.05)
    seen: list[float] = []

    async def observing(requests: Sequence[CheckBatch]) -> BatchResult:
        seen.append(sys.getswitchinterval())
        await asyncio.sleep(0.002)
        return BatchResult(1, [admitted(r) for r in requests])

    co = Coalescer(observing, timeout=1.0, linger=0.0)
    await asyncio.gather(*(co.submit(batch()) for _ in range(3)))  # concurrent: busy
    seen.clear()
    await co.submit(batch())  # alone, but right after: not idle
    assert seen != [pytest.approx(SPIN_SWITCH_INTERVAL)]
    await asyncio.sleep(0.06)  # quiet for longer than IDLE_QUIET: idle again
    seen.clear()
    await co.submit(batch())
    assert seen == [pytest.approx(SPIN_SWITCH_INTERVAL)]


async def test_waiting_for_a_slot_does_not_count_against_the_store_timeout() -> None:
    run = Runner(delay=0.03)  # each call takes 30 ms of the 50 ms allowed
    co = Coalescer(run, timeout=0.05, max_in_flight=1, max_batch=1, linger=0.0, idle_spin=0.0)
    started = now()
    answers = await asyncio.gather(*(co.submit(batch()) for _ in range(4)))  # the last waits 90 ms for its slot
    assert len(answers) == 4 and run.calls == [1, 1, 1, 1]
    assert now() - started == pytest.approx(0.12)


async def test_a_request_that_never_gets_a_slot_gives_up_after_the_longer_bound() -> None:
    run = Runner()
    run.release = asyncio.Event()  # a hung store: every call is given up after the 45 ms timeout
    co = Coalescer(run, timeout=0.045, max_in_flight=1, max_batch=1, linger=0.0, idle_spin=0.0)
    started = now()
    results = await asyncio.gather(*(co.submit(batch()) for _ in range(14)), return_exceptions=True)
    reasons = [str(r) for r in results]
    # one call at a time, each given up at its 45 ms deadline; a request waits at most 0.5 s (10 x, at least
    # 0.5 s) for a slot: the 12th call leaves at 0.495 s, the 13th request would at 0.54 s, so it and the 14th
    # are answered without a call (no deadline falls on the 0.5 s bound itself, where rounding decides)
    assert reasons == ["store timeout"] * 12 + ["no store call slot in time"] * 2
    assert run.calls == [1] * 12
    assert now() - started == pytest.approx(0.54, abs=0.01)
    run.let_go()


async def test_a_cancelled_request_leaves_the_queue_unsent() -> None:
    run = Runner()
    co = Coalescer(run, timeout=5.0, max_in_flight=1, linger=0.0)
    first = await hold_a_call(co, run)
    gone, kept = await submit_while_held(co, 2)
    gone.cancel()  # as grpc does when the caller's deadline passes
    run.let_go()
    await asyncio.gather(first, kept)
    assert run.calls == [1, 1]


async def test_an_idle_workers_lone_request_is_sent_by_its_caller_without_a_loop_round() -> None:
    run = Runner()
    run.release = asyncio.Event()
    co = Coalescer(run, timeout=5.0, idle_spin=0.0)
    caller = asyncio.ensure_future(co.submit(batch()))
    await asyncio.sleep(0)  # the caller's first step only: a drain task would not have run yet
    assert run.calls == [1]
    run.let_go()
    await caller


async def test_a_caller_cancelled_during_its_lone_call_frees_the_slot() -> None:
    run = Runner()
    run.release = asyncio.Event()
    co = Coalescer(run, timeout=5.0, max_in_flight=1, idle_spin=0.0)
    caller = asyncio.ensure_future(co.submit(batch()))
    await asyncio.sleep(0.01)
    caller.cancel()  # the gateway's deadline passed while its call was out
    with pytest.raises(asyncio.CancelledError):
        await caller
    run.release = None
    assert (await co.submit(batch()))[0] == 7  # the only slot is free again
    assert run.calls == [1, 1]


async def test_a_lone_call_given_up_then_cancelled_hands_its_slot_on_once() -> None:
    run = Runner()
    run.release = asyncio.Event()  # never set: the first call hangs
    co = Coalescer(run, timeout=0.05, max_in_flight=1, idle_spin=0.0)
    caller = asyncio.ensure_future(co.submit(batch()))
    await asyncio.sleep(0.01)
    behind = asyncio.ensure_future(co.submit(batch()))  # waits for the only slot
    with pytest.raises(StoreUnavailable, match="store timeout"):
        await caller  # answered at the deadline; its call still hangs, its slot went to `behind`
    with pytest.raises(StoreUnavailable, match="store timeout"):
        await behind
    assert co._in_flight == 0
    run.release = None
    assert (await co.submit(batch()))[0] == 7
