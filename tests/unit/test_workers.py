"""Which CPU each worker keeps to (--cpu-affinity)."""

from __future__ import annotations

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
