"""Compiled, immutable rules: what the engine needs of one configured limit, computed once at load."""

from __future__ import annotations

from dataclasses import dataclass, field

from ratelimitd.config.units import UNIT_SECONDS, Unit


@dataclass(frozen=True, slots=True)
class Rule:
    """One limit. `ident` names it inside Redis keys; it includes algorithm, unit and limit so two
    rules never share a counter, and a changed limit starts a fresh one."""

    domain: str
    stats_key: str
    ident: str
    requests_per_unit: int
    unit: Unit
    unit_multiplier: int = 1
    algorithm: str = "fixed_window"
    burst: int = 0
    timezone: str = "UTC"
    name: str | None = None
    unlimited: bool = False
    shadow_mode: bool = False
    quota_mode: bool = False
    detailed_metric: bool = False
    replaces: frozenset[str] = field(default_factory=frozenset)
    # (key, configured value or "") per descriptor level: the parts of the stats key, for metrics
    path: tuple[tuple[str, str], ...] = ()

    @property
    def window_seconds(self) -> int:
        return UNIT_SECONDS[self.unit] * self.unit_multiplier

    @property
    def capacity(self) -> int:
        """Largest cost that can ever pass: the burst for a token bucket, the limit otherwise."""
        return self.burst if self.algorithm == "token_bucket" else self.requests_per_unit
