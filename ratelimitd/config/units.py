"""Time units of envoyproxy/ratelimit's config, with its lengths (a "month" is 30 days there)."""

from __future__ import annotations

from enum import IntEnum


class Unit(IntEnum):
    """Values equal Envoy's `RateLimitResponse.RateLimit.Unit` numbers, so encoding is a cast."""

    SECOND = 1
    MINUTE = 2
    HOUR = 3
    DAY = 4
    MONTH = 5
    YEAR = 6
    WEEK = 7


UNIT_SECONDS: dict[Unit, int] = {
    Unit.SECOND: 1,
    Unit.MINUTE: 60,
    Unit.HOUR: 3600,
    Unit.DAY: 86400,
    Unit.WEEK: 7 * 86400,
    Unit.MONTH: 30 * 86400,
    Unit.YEAR: 365 * 86400,
}

CALENDAR_UNITS = frozenset({Unit.DAY, Unit.WEEK, Unit.MONTH, Unit.YEAR})


def parse_unit(name: str) -> Unit:
    """Case-insensitive, as envoyproxy/ratelimit reads it; raises ValueError with its wording."""
    try:
        return Unit[name.upper()]
    except KeyError:
        raise ValueError(f"invalid rate limit unit '{name}'") from None
