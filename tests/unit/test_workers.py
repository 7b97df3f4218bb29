"""Worker processes: which CPU each keeps to (--cpu-affinity), when a dead one restarts, the start-up heap."""

from __future__ import annotations

import gc

import pytest

from ratelimitd import workers
from ratelimitd.settings import Settings


@pytest.fixture
def four_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {3, 5, 6, 9})


@pytest.mark.usefixtures("four_cpus")
@pytest.mark.parametrize(
    ("count", "mode", "expected"),
    [
        (4, "auto", [3, 5, 6, 9]),  # the CPUs this process may use, not 0..n-1
        (2, "auto", [3, 5]),
        (1, "auto", None),  # one worker keeps gRPC's threads free to use every CPU
        (5, "auto", None),  # more workers than CPUs: the kernel balances them
        (4, "off", None),
    ],
)
def test_worker_cpus(count: int, mode: str, expected: list[int] | None) -> None:
    assert workers.worker_cpus(Settings(config="x", workers=count, cpu_affinity=mode)) == expected


def test_restarts_back_off_and_a_crash_loop_stops_the_service() -> None:
    policy = workers.RestartPolicy(window=60, max_deaths=4, first_delay=0.5, max_delay=3)
    assert [policy.after_death(0, t) for t in (0, 1, 2, 3)] == [0.5, 1.0, 2.0, 3.0]  # doubling, capped
    assert policy.after_death(1, 3) == 0.5  # each worker has its own count
    assert policy.after_death(0, 4) is None  # the 5th death within 60 s: a crash loop


def test_old_deaths_leave_the_window() -> None:
    """Three quick crashes weeks apart are three single crashes, not a crash loop."""
    policy = workers.RestartPolicy(window=60, max_deaths=2)
    week = 7 * 86400.0
    assert [policy.after_death(0, t) for t in (0, week, 2 * week, 3 * week)] == [0.5] * 4
    assert policy.recent(0) == 1  # memory stays bounded: only deaths inside the window are kept
    assert policy.after_death(0, 3 * week + 59) == 1.0
    assert policy.after_death(0, 3 * week + 61) == 1.0  # the death at 3 weeks has left the window


def test_the_startup_heap_is_frozen_out_of_full_collections() -> None:
    before = gc.get_freeze_count()
    try:
        workers.freeze_startup_heap()
        assert gc.get_freeze_count() > before
        marker: list[int] = []  # a container, so the collector tracks it
        assert any(o is marker for o in gc.get_objects(generation=0))  # new objects are still collected
    finally:
        gc.unfreeze()
