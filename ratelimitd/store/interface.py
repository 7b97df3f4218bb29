"""What the engine and the coalescer know of a store: its result and error types and a small protocol.

Kept apart from `redis_store.py` so that the layers above depend on this contract, not on redis-py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from ratelimitd.store.checks import Check, CheckBatch


class StoreUnavailable(Exception):
    """The store did not answer in time or answered with an error; the failure mode decides."""


class CheckResult(NamedTuple):
    """One check's answer; a named tuple because a batch decodes thousands a second (~2x cheaper to make than
    a frozen dataclass)."""

    admitted: bool
    remaining: int
    reset_after_us: int
    retry_after_us: int  # 0 when admitted, -1 when the cost can never fit


class RequestResult(NamedTuple):
    """One request's answer. `admitted` is the script's verdict (lua/batch.lua decides admission, nowhere
    else); the counts let a cluster combine the verdicts of a request's per-slot parts."""

    admitted: bool
    enforced_denied: int
    quota_checks: int
    quota_denied: int
    checks: list[CheckResult]


def combine(parts: Sequence[RequestResult], checks: list[CheckResult]) -> RequestResult:
    """One request whose checks were decided in several parts (one per cluster slot), with the verdict from the
    parts' own counts: no enforced check denied anywhere, and not every quota_mode check denied."""
    enforced = sum(p.enforced_denied for p in parts)
    quota = sum(p.quota_checks for p in parts)
    quota_denied = sum(p.quota_denied for p in parts)
    admitted = not enforced and not (quota and quota_denied == quota)
    return RequestResult(admitted, enforced, quota, quota_denied, checks)


class BatchResult(NamedTuple):
    now_us: int
    results: list[RequestResult]


class Store(Protocol):
    """The operations the service needs from a store of counters."""

    async def evaluate(self, requests: Sequence[CheckBatch], now_us: int | None = None) -> BatchResult: ...

    async def delete(self, key: str) -> bool: ...

    async def adjust_quota(self, check: Check, delta: int) -> tuple[int, int, int, int]: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class StoredDomain:
    """One version of one domain as the store keeps it (the current one, or a history entry)."""

    domain: str
    version: int
    time_ms: int
    who: str
    summary: str
    yaml: str
    action: str

    def as_json(self, with_yaml: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version,
            "time_ms": self.time_ms,
            "who": self.who,
            "summary": self.summary,
            "action": self.action,
        }
        if with_yaml:
            out["yaml"] = self.yaml
        return out


@dataclass(frozen=True, slots=True)
class WriteResult:
    """`ok`: written as `version`; `exists`: a create found the domain; `stale`: the version did not match."""

    outcome: str
    version: int


class LimitsBackend(Protocol):
    """Limits kept in the store (store/limits_store.py)."""

    async def generation(self) -> int | None: ...

    async def read_all(self) -> tuple[int | None, dict[str, StoredDomain]]: ...

    async def get(self, domain: str) -> StoredDomain | None: ...

    async def history(self, domain: str) -> list[StoredDomain]: ...

    async def write(
        self, domain: str, precondition: str, yaml_text: str | None, who: str, summary: str, action: str
    ) -> WriteResult: ...

    async def raise_generation(self, floor: int) -> int: ...


class StatsBackend(Protocol):
    """Fleet-wide traffic statistics (store/fleet_stats.py); a rule is (domain, stats key)."""

    async def add(
        self,
        now: float,
        counts: Mapping[tuple[str, str], list[int]],
        denied: Mapping[tuple[str, str], Mapping[str, int]],
    ) -> None: ...

    async def series(self, now: float) -> dict[tuple[str, str], list[list[int]]]: ...

    async def top(self, now: float, n: int = 20) -> dict[tuple[str, str], list[tuple[str, int]]]: ...


class ShareAnswer(NamedTuple):
    """One Envoy's share of a rule (requests per second; negative: it holds none), the Envoys active and busy
    on the bucket, and whether the rule's counter is spent (> 0: us until it has room; -1: not while this
    state lasts; 0: not spent)."""

    share: float
    active: int
    busy: int
    spent_us: int


class ShareBackend(Protocol):
    """RLQS fair shares and charges (store/rlqs_store.py)."""

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
    ) -> ShareAnswer: ...
