"""RLQS: Envoy enforces token buckets that ratelimitd assigns, and ratelimitd splits each rule's rate among the
Envoys using it, through the store, so every instance and every Envoy sees one fair split.

A report's bucket id (an unordered map) is matched against the domain's descriptor tree (`match_map`); no rule
or an `unlimited` rule: ALLOW_ALL; a `shadow_mode` rule: ALLOW_ALL with what Envoy allowed still charged and
counted. Otherwise one script call records this Envoy's demand
(allowed + denied since its last report, over the store's clock) and returns its max-min fair share, pushed as a
token bucket refilled every second. Envoy 1.40 notices a changed bucket only by `tokens_per_fill` or
`max_tokens` (not the fill interval), takes whole-second TTLs, and reports every 5 s (shared/reference/rlqs.md).
Between reports each stream asks again every `REFRESH_SECONDS` (a read, no demand recorded) and pushes a changed
assignment at once, so an Envoy joining a bucket shrinks the others' shares within about a second.

Bound: a change in demand is seen at the Envoy's next report; over-admission is about the sum of
(rate x report interval) + burst. RLQS suits high-rate limits; small strict limits stay on the RLS path.
"""

from __future__ import annotations

from dataclasses import dataclass

from ratelimitd.config.holder import ConfigHolder
from ratelimitd.config.matcher import match_map
from ratelimitd.config.rules import Rule
from ratelimitd.metrics import Metrics
from ratelimitd.store.checks import ENFORCED, build_check
from ratelimitd.store.interface import ShareBackend
from ratelimitd.store.keys import KeyEncoder

REPORT_SECONDS = 5  # Envoy 1.40's fixed reporting interval
ASSIGNMENT_TTL_SECONDS = 2 * REPORT_SECONDS + 1  # survives one lost report
ACTIVE_US = 3 * REPORT_SECONDS * 1_000_000  # an Envoy silent this long no longer holds a share
REFRESH_SECONDS = 1.0
RLQS_MIN_PER_REPORT = 10


@dataclass(frozen=True, slots=True)
class Assignment:
    """What Envoy is told for one bucket: `allow_all`, `deny_all`, or a token bucket."""

    kind: str
    tokens_per_fill: int = 0
    max_tokens: int = 0
    ttl_seconds: int = ASSIGNMENT_TTL_SECONDS


ALLOW_ALL = Assignment("allow_all")


def rate_per_second(rule: Rule) -> float:
    return rule.requests_per_unit / rule.window_seconds


def deny_when_spent(rule: Rule) -> bool:
    """Whether a spent counter means DENY_ALL: for windows and quotas longer than the report interval. A shorter
    window is over before a report lands, so the shares alone hold its rate; a DENY_ALL there would only toggle
    Envoy's bucket, and every fresh token bucket Envoy builds starts full (measured: 1,378/s admitted on a
    1,000/s one-second window with the toggling, in `make bench-rlqs`)."""
    return rule.algorithm != "token_bucket" and rule.window_seconds > REPORT_SECONDS


def token_bucket(rule: Rule, share: float) -> Assignment:
    """A share (requests per second) as a bucket refilled every second; its burst is the rule's burst (token
    bucket) or one second of the rate, in proportion to the share."""
    rate = rate_per_second(rule)
    per_fill = max(1, int(share))
    burst = rule.burst if rule.algorithm == "token_bucket" and rule.burst else rate
    return Assignment("token_bucket", per_fill, max(per_fill, round(burst * share / rate)) if rate else per_fill)


class RlqsEngine:
    def __init__(self, holder: ConfigHolder, shares: ShareBackend, keys: KeyEncoder, metrics: Metrics) -> None:
        self.holder = holder
        self.shares = shares
        self.keys = keys
        self.metrics = metrics

    def _resolve(self, domain: str, bucket: dict[str, str]) -> tuple[Rule, tuple[str, ...], str] | None:
        """The rule a bucket falls under, its descriptor values and its counter key (the RLS path's); None for
        no rule or an unlimited one (ALLOW_ALL)."""
        d = self.holder.current.domains.get(domain)
        if d is None:
            return None
        found, _ = match_map(d.tree, bucket)
        if found is None or found.rule.unlimited:
            return None
        rule, values = found.rule, found.counter_values
        return rule, values, self.keys.key(self.keys.rule_part(rule.domain, rule.ident), values)

    async def _ask(
        self, domain: str, envoy: str, bucket: dict[str, str], seen: int, allowed: int, denied: int = 0
    ) -> Assignment | None:
        resolved = self._resolve(domain, bucket)
        if resolved is None:
            return ALLOW_ALL
        rule, values, key = resolved
        if seen >= 0:
            self.metrics.record_reported(rule, values, allowed, denied)
        elif rule.shadow_mode:
            return ALLOW_ALL
        answer = await self.shares.report(
            build_check(rule, key, 0, ENFORCED),
            envoy,
            seen,
            allowed,
            rate_per_second(rule),
            ACTIVE_US,
            REPORT_SECONDS * 1_000_000,
            deny_when_spent(rule),
            window_us=rule.window_seconds * 1_000_000,
        )
        if rule.shadow_mode:
            return ALLOW_ALL  # usage charged and counted, never enforced
        if answer.spent_us:  # a window or quota used up: nobody passes until it has room (whole seconds)
            ttl = -(-answer.spent_us // 1_000_000) if answer.spent_us > 0 else ASSIGNMENT_TTL_SECONDS
            return Assignment("deny_all", ttl_seconds=max(1, min(ttl, ASSIGNMENT_TTL_SECONDS)))
        return None if answer.share < 0 else token_bucket(rule, answer.share)

    async def assign(self, domain: str, envoy: str, bucket: dict[str, str], allowed: int, denied: int) -> Assignment:
        """A report: record this Envoy's demand, charge what it allowed, and return its assignment."""
        found = await self._ask(domain, envoy, bucket, allowed + denied, allowed, denied)
        return ALLOW_ALL if found is None else found

    async def refresh(self, domain: str, envoy: str, bucket: dict[str, str]) -> Assignment | None:
        """Between reports: this Envoy's assignment as the other Envoys' demand and charges make it now (None:
        it holds no share)."""
        return await self._ask(domain, envoy, bucket, -1, 0)


def under_rlqs(rule: Rule) -> dict[str, object]:
    """What a rule would get under RLQS, for `config explain`: the rate that is shared, how it is pushed, the
    over-admission bound and a verdict. RLQS suits a rule that sees at least `RLQS_MIN_PER_REPORT` requests per
    report interval; a small strict limit (5 logins per 5 minutes) would be overrun by the report lag alone."""
    if rule.unlimited or rule.shadow_mode:
        return {"assignment": "ALLOW_ALL", "suits_rlqs": True}
    rate = rate_per_second(rule)
    burst = rule.burst if rule.algorithm == "token_bucket" and rule.burst else rate
    per_report = rate * REPORT_SECONDS
    return {
        "assignment": "token_bucket: each Envoy's max-min fair share of the rate, refilled every second",
        "rate_per_second": round(rate, 6),
        "deny_all_when_spent": deny_when_spent(rule),
        "over_admission_per_envoy": round(per_report + burst, 3),  # rate x report lag + burst
        "suits_rlqs": per_report >= RLQS_MIN_PER_REPORT,
        "advice": (
            "suits RLQS: Envoy enforces it locally"
            if per_report >= RLQS_MIN_PER_REPORT
            else f"keep on the RLS path: under {RLQS_MIN_PER_REPORT} requests per {REPORT_SECONDS} s report interval"
        ),
    }
