"""Pydantic models of envoyproxy/ratelimit's YAML format plus our extensions.

Unknown keys are errors (as in envoyproxy/ratelimit), so a misspelt key never silently disables a limit.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

from ratelimitd.config.units import CALENDAR_UNITS, UNIT_SECONDS, parse_unit

Algorithm = Literal["fixed_window", "token_bucket", "sliding_window", "sliding_log", "quota"]

MAX_UINT32 = 2**32 - 1
# The exact sliding log keeps one sorted-set entry per admitted hit; past this it is the wrong tool.
SLIDING_LOG_MAX_LIMIT = 10_000
MAX_WINDOW_SECONDS = 3650 * 86400
# Lua numbers are doubles: the token bucket and the sliding window multiply a count by the window length in
# ticks (a tick is at most one second), and that product must stay an exact integer.
_EXACT_PRODUCT = 2**52


def max_requests_per_unit(algorithm: str, window_seconds: int) -> int:
    """The largest requests_per_unit (and burst) an algorithm counts exactly over a window this long.
    fixed_window and quota only add and compare counts, so they take any uint32, as envoyproxy/ratelimit does."""
    if algorithm in ("token_bucket", "sliding_window"):
        return min(MAX_UINT32, (_EXACT_PRODUCT - 1) // window_seconds)
    if algorithm == "sliding_log":
        return SLIDING_LOG_MAX_LIMIT
    return MAX_UINT32


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReplacesModel(_Strict):
    name: StrictStr

    @model_validator(mode="after")
    def _non_empty(self) -> ReplacesModel:
        if not self.name:
            raise ValueError("should not have an empty replaces entry")
        return self


class RateLimitModel(_Strict):
    unit: StrictStr | None = None
    requests_per_unit: StrictInt = Field(default=0, ge=0, le=MAX_UINT32)
    unlimited: StrictBool = False
    name: StrictStr | None = None
    replaces: list[ReplacesModel] = Field(default_factory=list)
    # ratelimitd extensions
    algorithm: Algorithm = "fixed_window"
    unit_multiplier: StrictInt = Field(default=1, ge=1, le=1_000_000)
    burst: StrictInt | None = Field(default=None, ge=1, le=MAX_UINT32)
    timezone: StrictStr = "UTC"

    @model_validator(mode="after")
    def _consistent(self) -> RateLimitModel:
        if self.unlimited:
            if self.unit is not None:
                raise ValueError("should not specify rate limit unit when unlimited")
            return self
        if self.unit is None:
            raise ValueError("rate limit unit must be set (second, minute, hour, day, week, month, year)")
        unit = parse_unit(self.unit)
        if self.name and any(r.name == self.name for r in self.replaces):
            raise ValueError("replaces should not contain name of same descriptor")
        if self.burst is not None and self.algorithm != "token_bucket":
            raise ValueError("burst is only meaningful with algorithm token_bucket")
        if self.algorithm == "quota":
            if unit not in CALENDAR_UNITS:
                raise ValueError("algorithm quota needs a calendar unit: day, week, month or year")
            if self.unit_multiplier != 1:
                raise ValueError("algorithm quota does not take unit_multiplier")
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown timezone '{self.timezone}'") from None
        elif self.timezone != "UTC":
            raise ValueError("timezone is only meaningful with algorithm quota")
        window = UNIT_SECONDS[unit] * self.unit_multiplier
        if window > MAX_WINDOW_SECONDS:
            raise ValueError("a window may be at most 10 years long")
        largest = max_requests_per_unit(self.algorithm, window)
        if self.algorithm == "sliding_log" and self.requests_per_unit > largest:
            raise ValueError(f"sliding_log keeps one entry per hit; requests_per_unit must be <= {largest}")
        if max(self.requests_per_unit, self.burst or 0) > largest:
            per = f"{self.unit_multiplier} x {unit.name.lower()}" if self.unit_multiplier > 1 else unit.name.lower()
            raise ValueError(
                f"{self.algorithm} counts at most {largest} per {per} exactly; requests_per_unit (and burst) must "
                "be <= that (fixed_window takes any uint32)"
            )
        return self


def _scalar_text(v: Any) -> Any:
    """Numbers written unquoted (`value: 8080`) are text to a descriptor, as in envoyproxy/ratelimit."""
    return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v


ScalarText = Annotated[StrictStr, BeforeValidator(_scalar_text)]


class DescriptorModel(_Strict):
    key: ScalarText
    value: ScalarText | None = None
    rate_limit: RateLimitModel | None = None
    descriptors: list[DescriptorModel] = Field(default_factory=list)
    shadow_mode: StrictBool = False
    quota_mode: StrictBool = False
    detailed_metric: StrictBool = False
    value_to_metric: StrictBool = False
    share_threshold: StrictBool = False
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> DescriptorModel:
        if not self.key:
            raise ValueError("descriptor has empty key")
        if self.share_threshold and "*" not in (self.value or ""):
            raise ValueError("share_threshold can only be used with a wildcard value")
        _no_duplicate_siblings(self.descriptors, "")
        return self


class HttpEntryModel(_Strict):
    """One entry of a descriptor built from an HTTP request (forward-auth): exactly one source."""

    key: ScalarText
    source: Literal["client_ip", "method", "path", "host"] | None = None
    header: StrictStr | None = None
    value: ScalarText | None = None

    @model_validator(mode="after")
    def _one_source(self) -> HttpEntryModel:
        if sum(x is not None for x in (self.source, self.header, self.value)) != 1:
            raise ValueError("give exactly one of source (client_ip, method, path, host), header or value")
        if not self.key:
            raise ValueError("entry has empty key")
        return self


class HttpDescriptorModel(_Strict):
    entries: list[HttpEntryModel] = Field(min_length=1)


class DomainModel(_Strict):
    domain: StrictStr
    descriptors: list[DescriptorModel] = Field(default_factory=list)
    # ratelimitd extension: how GET /v1/forward-auth/<domain> builds descriptors from request headers
    http_descriptors: list[HttpDescriptorModel] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> DomainModel:
        if not self.domain:
            raise ValueError("config file cannot have empty domain")
        _no_duplicate_siblings(self.descriptors, f"{self.domain}.")
        return self


def _no_duplicate_siblings(children: list[DescriptorModel], prefix: str) -> None:
    """Two siblings with the same key and value are an error, with envoyproxy/ratelimit's wording."""
    seen: set[tuple[str, str]] = set()
    for child in children:
        ident = (child.key, child.value or "")
        if ident in seen:
            composite = f"{child.key}_{child.value}" if child.value else child.key
            raise ValueError(f"duplicate descriptor composite key '{prefix}{composite}'")
        seen.add(ident)
