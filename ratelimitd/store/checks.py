"""Translate a matched rule into the arguments of one check in `lua/batch.lua`.

This is the only place that knows the scripts' argument layout and algorithm ids. Constant parts are
computed once per rule; only the key, the cost and (for quotas) the period boundaries vary per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo

from ratelimitd.clock import wall_time
from ratelimitd.config.rules import Rule
from ratelimitd.config.units import Unit

ALGORITHM_IDS = dict(fixed_window=1, token_bucket=2, sliding_window=3, sliding_log=4, quota=5)

ENFORCED, SHADOW, QUOTA_MODE = 0, 1, 2

_US = 1_000_000
_EXACT = 2**52


class CheckArgs(NamedTuple):
    """The 8 fields one check passes to the scripts, in their order (lua/lib.lua's read_check)."""

    algorithm: int
    cost: int
    mode: int  # ENFORCED, SHADOW or QUOTA_MODE
    limit: int
    p1: int
    p2: int
    p3: int
    p4: int


@dataclass(frozen=True, slots=True)
class Check:
    """One rule applied to one descriptor: the key and the script arguments."""

    key: str
    args: CheckArgs


@dataclass(frozen=True, slots=True)
class CheckBatch:
    """The checks of one request, decided together (all-or-nothing)."""

    checks: tuple[Check, ...]
    dry_run: bool = False


def _resolution(units: int, window_us: int) -> int:
    """Microseconds per tick: the finest at which `units * window` stays exact in a Lua double."""
    for res in (1, 1000, _US):
        if units * (window_us // res) < _EXACT:
            return res
    raise ValueError("limit too large for its window")  # the config validator rules this out


_STATIC: dict[str, tuple[int, int, int, int, int]] = {}


def static_args(rule: Rule) -> tuple[int, int, int, int, int]:
    """(algorithm id, limit, p1, p2, p3) of a rule; p4 is unused except by quotas. Cached by the rule's
    identity string (which holds every field that matters), whose hash Python keeps."""
    found = _STATIC.get(rule.ident)
    if found is None:
        if len(_STATIC) > 100_000:
            _STATIC.clear()
        found = _STATIC[rule.ident] = _compute_static_args(rule)
    return found


def _compute_static_args(rule: Rule) -> tuple[int, int, int, int, int]:
    alg = ALGORITHM_IDS[rule.algorithm]
    window_us = rule.window_seconds * _US
    n = rule.requests_per_unit
    if rule.algorithm == "token_bucket":
        res = _resolution(max(n, rule.burst), window_us)
        return alg, n, window_us // res, res, rule.burst
    if rule.algorithm == "sliding_window":
        res = _resolution(n, window_us)
        return alg, n, window_us // res, res, 0
    return alg, n, window_us, 1, 0


def build_check(rule: Rule, key: str, cost: int, mode: int, now: float | None = None) -> Check:
    alg, n, p1, p2, p3 = static_args(rule)
    if rule.algorithm == "quota":
        b = quota_boundaries(rule.unit, rule.timezone, wall_time() if now is None else now)
        return Check(key, CheckArgs(alg, cost, mode, n, *b))
    return Check(key, CheckArgs(alg, cost, mode, n, p1, p2, p3, 0))


def quota_boundaries(unit: Unit, tz: str, now: float) -> tuple[int, int, int, int]:
    """Starts of the previous, current and next calendar periods and the end of the next (us).

    The script picks the period that holds the store's time, so a service clock that is off by up to
    a period still charges the right one.
    """
    # Every zone's calendar boundaries fall on a quarter hour (UTC+5:30, +5:45, ...), so the quarter hour that
    # holds `now` lies in one period and its boundaries can be cached; an hour could straddle a local midnight.
    return _boundaries_for_quarter(unit, tz, int(now // 900))


@lru_cache(maxsize=1024)
def _boundaries_for_quarter(unit: Unit, tz: str, quarter: int) -> tuple[int, int, int, int]:
    zone = ZoneInfo(tz)
    local = datetime.fromtimestamp(quarter * 900, zone)
    start = _period_start(unit, local)
    prev = _period_start(unit, start - timedelta(seconds=1))
    nxt = _next_start(unit, start)
    after = _next_start(unit, nxt)
    return tuple(int(d.timestamp()) * _US for d in (prev, start, nxt, after))  # type: ignore[return-value]


def _period_start(unit: Unit, local: datetime) -> datetime:
    day = local.replace(hour=0, minute=0, second=0, microsecond=0, fold=0)
    if unit is Unit.WEEK:
        day -= timedelta(days=day.weekday())
    elif unit is Unit.MONTH:
        day = day.replace(day=1)
    elif unit is Unit.YEAR:
        day = day.replace(month=1, day=1)
    return day


def _next_start(unit: Unit, start: datetime) -> datetime:
    if unit is Unit.DAY:
        nxt = start + timedelta(days=1)
    elif unit is Unit.WEEK:
        nxt = start + timedelta(days=7)
    elif unit is Unit.MONTH:
        nxt = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    else:
        nxt = start.replace(year=start.year + 1)
    return nxt.replace(hour=0, minute=0, second=0, microsecond=0)
