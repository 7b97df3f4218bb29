"""The decision core shared by every face: request -> matched rules -> one store call -> decision."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from ratelimitd.config.holder import ConfigHolder
from ratelimitd.config.loader import Config, Domain
from ratelimitd.config.matcher import match
from ratelimitd.config.rules import Rule
from ratelimitd.engine.decision import UNLIMITED_REMAINING, Code, Decision, Status
from ratelimitd.engine.local_cache import OverLimitCache
from ratelimitd.engine.request import Descriptor, LimitOverride, Request, validate
from ratelimitd.metrics import Metrics
from ratelimitd.store.checks import ENFORCED, QUOTA_MODE, SHADOW, Check, CheckBatch, build_check
from ratelimitd.store.interface import RequestResult, StoreUnavailable
from ratelimitd.store.keys import KeyEncoder

log = logging.getLogger(__name__)

# A cached denial is re-checked with the store at least this often, so an admin reset or quota top-up
# reaches every worker within a second while a hot abuser still costs one store call per second per worker.
LOCAL_CACHE_MAX_SECONDS = 1.0


class Checked(NamedTuple):
    """One descriptor's rule as a request uses it."""

    position: int  # of the descriptor in the request
    rule: Rule
    values: tuple[str, ...]  # that identify its counter
    cost: int


Submit = Callable[[CheckBatch], Awaitable[tuple[int, int, RequestResult]]]


# Matched requests remembered per config; cleared whole when full, so a flood of distinct requests costs a
# dict insert each and memory stays bounded.
PLAN_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class PlanItem:
    """One descriptor's rule, ready to send: its check, or None when it must be built per request."""

    checked: Checked
    key: str
    mode: int
    check: Check | None


@dataclass(frozen=True, slots=True)
class Plan:
    domain_known: bool
    unlimited: tuple[int, ...]  # descriptors answered OK with unlimited remaining
    items: tuple[PlanItem, ...]


@dataclass(frozen=True, slots=True)
class EngineOptions:
    failure_mode_deny: bool = False


@lru_cache(maxsize=4096)
def _override_rule(domain: str, keys: tuple[str, ...], override: LimitOverride) -> Rule:
    ident = json.dumps(["override", override.requests_per_unit, override.unit.name, keys], separators=(",", ":"))
    stats_key = ".".join(keys)
    return Rule(domain, stats_key, ident, override.requests_per_unit, override.unit, path=tuple((k, "") for k in keys))


class Engine:
    def __init__(
        self,
        config: ConfigHolder,
        submit: Submit,
        keys: KeyEncoder,
        options: EngineOptions,
        metrics: Metrics | None = None,
        local_cache: OverLimitCache | None = None,
    ) -> None:
        self.config = config
        self.submit = submit
        self.keys = keys
        self.options = options
        self.metrics = metrics or Metrics()
        self.local_cache = local_cache  # None: off
        self._store_down = False
        self.on_store_recovered: Callable[[], None] | None = None
        self._plans: dict[Request, Plan] = {}
        self._plans_config: Config | None = None

    def rule_for(self, domain: Domain, d: Descriptor) -> tuple[Rule, tuple[str, ...]] | None:
        if d.limit is not None:
            keys = tuple(k for k, _ in d.entries)
            return _override_rule(domain.name, keys, d.limit), tuple(v for _, v in d.entries)
        m = match(domain.tree, d.entries)
        return None if m is None else (m.rule, m.counter_values)

    def _plan(self, req: Request) -> Plan:
        """The request matched against the config in force; cached per config, since the same descriptor sets
        come back again and again (the same client, route, key) and matching them is most of the engine's CPU."""
        config = self.config.current
        if config is not self._plans_config:
            self._plans.clear()
            self._plans_config = config
        plan = self._plans.get(req)
        if plan is not None:
            return plan
        validate(req)
        plan = self._prepare(config, req)
        if len(self._plans) >= PLAN_CACHE_SIZE:
            self._plans.clear()
        self._plans[req] = plan
        return plan

    def _prepare(self, config: Config, req: Request) -> Plan:
        domain = config.domains.get(req.domain)
        if domain is None:
            return Plan(False, (), ())
        matched: list[tuple[int, Rule, tuple[str, ...]]] = []
        for i, d in enumerate(req.descriptors):
            found = self.rule_for(domain, d)
            if found is not None:
                matched.append((i, *found))
        replaced = {name for _, rule, _ in matched for name in rule.replaces}
        unlimited: list[int] = []
        items: list[PlanItem] = []
        for i, rule, values in matched:
            if rule.name is not None and rule.name in replaced:
                continue
            if rule.unlimited:
                unlimited.append(i)
                continue
            mode = SHADOW if rule.shadow_mode else QUOTA_MODE if rule.quota_mode else ENFORCED
            key = self.keys.key(self.keys.rule_part(rule.domain, rule.ident), values)
            cost = req.cost_of(req.descriptors[i])
            # a quota's period boundaries move with the clock: its check is built per request
            check = None if rule.algorithm == "quota" else build_check(rule, key, cost, mode)
            items.append(PlanItem(Checked(i, rule, values, cost), key, mode, check))
        return Plan(True, tuple(unlimited), tuple(items))

    async def check(self, req: Request) -> Decision:
        plan = self._plan(req)
        statuses = [Status() for _ in req.descriptors]
        if not plan.domain_known:
            self.metrics.domain_not_found.inc()
            return Decision(Code.OK, statuses)
        for i in plan.unlimited:
            statuses[i].remaining = UNLIMITED_REMAINING
        checks: list[Check] = []
        checked: list[Checked] = []
        cached_over: list[tuple[Checked, float]] = []
        cache = self.local_cache
        for item in plan.items:
            if cache is not None and item.mode == ENFORCED and (left := cache.remaining(item.key)) > 0:
                cached_over.append((item.checked, left))
                continue
            check = item.check
            if check is None:  # a quota: its period boundaries are taken per request
                check = build_check(item.checked.rule, item.key, item.checked.cost, item.mode)
            checks.append(check)
            checked.append(item.checked)
        if cached_over:
            return self._from_cache(statuses, cached_over)
        if not checks:
            return Decision(Code.OK, statuses)
        sent_at = time.monotonic()
        try:
            now_us, seq, result = await self.submit(CheckBatch(tuple(checks), req.dry_run))
        except StoreUnavailable as err:
            return self._failure(statuses, checked, err)
        if self._store_down:
            self._store_down = False
            log.warning("store reachable again; normal decisions resumed")
            if self.on_store_recovered is not None:
                self.on_store_recovered()
        if cache is not None:
            for c, check, r in zip(checked, checks, result.checks, strict=True):
                exhausted = not r.admitted and r.remaining == 0 and r.retry_after_us > 0
                if exhausted and c.cost <= 1 and check.args.mode == ENFORCED:
                    cache.put(check.key, sent_at + min(r.retry_after_us / 1e6, LOCAL_CACHE_MAX_SECONDS))
        decision = self._decide(statuses, checked, result)
        decision.store_order = (now_us, seq)
        return decision

    def _decide(self, statuses: list[Status], checked: list[Checked], result: RequestResult) -> Decision:
        """Statuses from the checks' answers; the overall code is the store's verdict (lua/batch.lua), never
        recomputed here. A rule in shadow mode never shows OVER_LIMIT, whatever else it is (quota_mode too)."""
        record = self.metrics.record
        for (i, rule, values, cost), r in zip(checked, result.checks, strict=True):
            record(rule, values, cost, r.admitted, r.remaining)
            s = statuses[i]
            s.rule = rule
            s.remaining = r.remaining
            s.reset_after_us = r.reset_after_us
            s.retry_after_us = r.retry_after_us
            if r.admitted:
                s.retry_after_us = 0
            elif rule.shadow_mode:
                s.shadow_denied = True
                s.remaining = 0
            else:
                s.code = Code.OVER_LIMIT
                s.remaining = 0
        return Decision(Code.OK if result.admitted else Code.OVER_LIMIT, statuses)

    def _from_cache(self, statuses: list[Status], cached: list[tuple[Checked, float]]) -> Decision:
        """A cached key over its limit denies the whole request: nothing is charged, the store is not asked.
        Descriptors not looked at carry no current_limit."""
        for (i, rule, values, cost), left in cached:
            self.metrics.record(rule, values, cost, False, 0, from_cache=True)
            s = statuses[i]
            s.code, s.rule, s.remaining = Code.OVER_LIMIT, rule, 0
            s.reset_after_us = s.retry_after_us = int(left * 1e6)
        return Decision(Code.OVER_LIMIT, statuses)

    def _failure(self, statuses: list[Status], checked: list[Checked], err: Exception) -> Decision:
        mode = "deny" if self.options.failure_mode_deny else "allow"
        self.metrics.failure_mode.labels(mode).inc()
        self.metrics.should_rate_limit_error.labels("redis_error").inc()
        if not self._store_down:
            self._store_down = True
            log.error(
                "store unavailable (%s); answering with failure mode %s",
                err,
                "deny" if self.options.failure_mode_deny else "allow",
            )
        code = Code.OVER_LIMIT if self.options.failure_mode_deny else Code.OK
        for i, rule, _, _ in checked:
            s = statuses[i]
            s.rule = rule
            s.code = code
            s.remaining = 0 if self.options.failure_mode_deny else rule.requests_per_unit
            s.reset_after_us = rule.window_seconds * 1_000_000
            s.retry_after_us = s.reset_after_us if self.options.failure_mode_deny else 0
        return Decision(code, statuses, store_failed=True)
