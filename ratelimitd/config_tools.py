"""Offline config tools behind `ratelimitd config explain | schema | diff`: review limits before deploy."""

from __future__ import annotations

import json

from ratelimitd.config.loader import Config, load_or_report
from ratelimitd.config.matcher import match
from ratelimitd.config.models import DomainModel, max_requests_per_unit
from ratelimitd.config.rules import Rule
from ratelimitd.engine.admin import describe_rule, rule_changes
from ratelimitd.engine.rlqs import under_rlqs
from ratelimitd.store.keys import KeyEncoder

_load = load_or_report


def explain(path: str, domain: str, entries: list[tuple[str, str]], prefix: str, hash_values: bool) -> int:
    config = _load(path)
    if config is None:
        return 1
    d = config.domains.get(domain)
    if d is None:
        print(json.dumps({"domain": domain, "match": None, "reason": "unknown domain: every request is OK"}))
        return 0
    m = match(d.tree, tuple(entries))
    if m is None:
        print(
            json.dumps(
                {
                    "domain": domain,
                    "match": None,
                    "reason": "no rule matches (or an allow-listed leaf): the descriptor is OK, not counted",
                }
            )
        )
        return 0
    rule = m.rule
    keys = KeyEncoder(prefix, hash_values)
    out = {
        "domain": domain,
        "match": describe_rule(rule),
        "rule": {
            "name": rule.name,
            "stats_key": rule.stats_key,
            "algorithm": rule.algorithm,
            "requests_per_unit": rule.requests_per_unit,
            "unit": rule.unit.name.lower(),
            "unit_multiplier": rule.unit_multiplier,
            "burst": rule.burst or None,
            "largest_requests_per_unit": max_requests_per_unit(rule.algorithm, rule.window_seconds),
            "unlimited": rule.unlimited,
            "shadow_mode": rule.shadow_mode,
            "quota_mode": rule.quota_mode,
        },
        "redis_key": None if rule.unlimited else keys.key(keys.rule_part(rule.domain, rule.ident), m.counter_values),
        "rlqs": under_rlqs(rule),
    }
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


def schema() -> int:
    doc = DomainModel.model_json_schema()
    doc["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    doc["title"] = "ratelimitd domain config (envoyproxy/ratelimit format + extensions)"
    print(json.dumps(doc, indent=2))
    return 0


def diff(old_path: str, new_path: str) -> int:
    """Exit 0 when equal, 3 when the limits differ (so CI can flag reviews), 1 on a bad config."""
    old, new = _load(old_path), _load(new_path)
    if old is None or new is None:
        return 1

    def rules(c: Config) -> list[Rule]:
        return [r for d in c.domains.values() for r in d.rules]

    lines = [
        line.replace(" -> ", "\n  -> ", 1) if line[0] == "~" else line for line in rule_changes(rules(old), rules(new))
    ]
    print("\n".join(lines) if lines else "no differences in limits")
    return 3 if lines else 0
