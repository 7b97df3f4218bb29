"""Drive the assembled Lua script synchronously with an explicit time (the scripts' test hook)."""

from __future__ import annotations

import redis

from ratelimitd.config.rules import Rule
from ratelimitd.config.units import Unit
from ratelimitd.store.checks import ENFORCED, CheckBatch, build_check
from ratelimitd.store.interface import BatchResult, CheckResult
from ratelimitd.store.keys import KeyEncoder
from ratelimitd.store.script_call import decode_batch, encode_batch
from ratelimitd.store.scripts import batch_script

T0 = 1_763_000_000_000_000  # a November 2025 instant, in us


class ScriptHarness:
    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.client.flushall()
        self.script = self.client.register_script(batch_script())
        self.keys = KeyEncoder("t:")

    def run(self, batches: list[CheckBatch], now_us: int) -> BatchResult:
        keys, args = encode_batch(batches, now_us)
        raw = self.script(keys=keys, args=args)
        return decode_batch(raw, batches)

    def one(self, rule: Rule, values: tuple[str, ...], cost: int, now_us: int, mode: int = ENFORCED) -> CheckResult:
        key = self.key(rule, values)
        check = build_check(rule, key, cost, mode, now=now_us / 1e6)
        return self.run([CheckBatch((check,))], now_us).results[0].checks[0]

    def key(self, rule: Rule, values: tuple[str, ...]) -> str:
        return self.keys.key(self.keys.rule_part(rule.domain, rule.ident), values)

    def close(self) -> None:
        self.client.close()


def make_rule(
    algorithm: str,
    limit: int,
    unit: Unit = Unit.SECOND,
    multiplier: int = 1,
    burst: int = 0,
    timezone: str = "UTC",
    name: str = "r",
) -> Rule:
    ident = f"{algorithm}/{limit}/{unit.name}/{multiplier}/{burst}/{timezone}/{name}"
    return Rule(
        "test",
        name,
        ident,
        limit,
        unit,
        multiplier,
        algorithm,
        burst or (limit if algorithm == "token_bucket" else 0),
        timezone,
        name,
    )
