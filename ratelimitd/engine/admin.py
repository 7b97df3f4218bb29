"""Admin operations on one limit (usage, reset, quota adjustment, config listing), transport-free."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ratelimitd.config.rules import Rule
from ratelimitd.engine.decision import Code, Status
from ratelimitd.engine.engine import Engine
from ratelimitd.engine.request import Descriptor, InvalidRequest, Request, validate
from ratelimitd.store.checks import ENFORCED, build_check
from ratelimitd.store.interface import Store

log = logging.getLogger(__name__)


class AdminOps:
    def __init__(self, engine: Engine, store: Store) -> None:
        self.engine = engine
        self.store = store

    def _resolve(self, domain_name: str, d: Descriptor) -> tuple[Rule, str]:
        validate(Request(domain_name, (d,)))
        domain = self.engine.config.current.domains.get(domain_name)
        if domain is None:
            raise InvalidRequest(f"unknown domain '{domain_name}'")
        found = self.engine.rule_for(domain, d)
        if found is None or found[0].unlimited:
            raise InvalidRequest("the descriptor matches no limited rule")
        rule, values = found
        keys = self.engine.keys
        return rule, keys.key(keys.rule_part(rule.domain, rule.ident), values)

    async def usage(self, domain: str, d: Descriptor) -> tuple[Status, str]:
        """The limit's state now, by a peek that charges nothing."""
        _, key = self._resolve(domain, d)
        peek = Descriptor(d.entries, 0, d.limit)
        decision = await self.engine.check(Request(domain, (peek,), dry_run=True))
        return decision.statuses[0], key

    async def reset(self, domain: str, d: Descriptor) -> bool:
        rule, key = self._resolve(domain, d)
        existed = await self.store.delete(key)
        if self.engine.local_cache is not None:  # this worker's; other workers re-check within a second
            self.engine.local_cache.discard(key)
        log.warning("admin reset of %s/%s (key existed: %s)", domain, rule.stats_key, existed)
        return existed

    async def adjust_quota(self, domain: str, d: Descriptor, delta: int) -> Status:
        rule, key = self._resolve(domain, d)
        if rule.algorithm != "quota":
            raise InvalidRequest(f"rule '{rule.name or rule.stats_key}' is {rule.algorithm}, not a quota")
        if abs(delta) > 2**40:
            raise InvalidRequest("delta is out of range")
        remaining, _, _, reset_us = await self.store.adjust_quota(build_check(rule, key, 0, ENFORCED), delta)
        if self.engine.local_cache is not None:
            self.engine.local_cache.discard(key)
        log.warning("admin quota adjustment of %s/%s by %d", domain, rule.stats_key, delta)
        code = Code.OK if remaining > 0 else Code.OVER_LIMIT
        return Status(code, rule, max(remaining, 0), reset_us)

    def list_config(self) -> list[str]:
        return [describe_rule(r) for d in self.engine.config.current.domains.values() for r in d.rules]


def describe_limit(r: Rule) -> str:
    """`10 per minute, fixed_window` (and the burst or time zone where the algorithm has one)."""
    if r.unlimited:
        return "unlimited"
    window = f"{r.unit_multiplier} {r.unit.name.lower()}s" if r.unit_multiplier > 1 else r.unit.name.lower()
    limit = f"{r.requests_per_unit} per {window}, {r.algorithm}"
    if r.algorithm == "token_bucket":
        limit += f", burst {r.burst}"
    if r.algorithm == "quota":
        limit += f", {r.timezone}"
    return limit


def describe_rule(r: Rule) -> str:
    """One line per rule, like envoyproxy/ratelimit's /rlconfig."""
    limit = describe_limit(r)
    flags = "".join([", shadow_mode" if r.shadow_mode else "", ", quota_mode" if r.quota_mode else ""])
    name = f" (name: {r.name})" if r.name else ""
    return f"{r.domain}.{r.stats_key}: {limit}{flags}{name}"


def rule_changes(old: Iterable[Rule], new: Iterable[Rule]) -> list[str]:
    """What changed between two sets of rules, a line each: `- removed`, `+ added`, `~ before -> after`."""
    a = {f"{r.domain}.{r.stats_key}": describe_rule(r) for r in old}
    b = {f"{r.domain}.{r.stats_key}": describe_rule(r) for r in new}
    lines = [f"- {a[k]}" for k in sorted(a.keys() - b.keys())]
    lines += [f"+ {b[k]}" for k in sorted(b.keys() - a.keys())]
    lines += [f"~ {a[k]} -> {b[k]}" for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]
    return lines
