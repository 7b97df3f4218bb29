"""The RLQS share script (`lua/rlqs_share.lua`) against real Redis: however demand is spread over the Envoys,
the shares never sum above the rule's rate, every active Envoy gets a share, an idle Envoy's share goes to the
busy ones, and an Envoy gone quiet gives its share back."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from ratelimitd.store.checks import Check, CheckArgs
from ratelimitd.store.connect import connect
from ratelimitd.store.embedded import EmbeddedRedis
from ratelimitd.store.rlqs_store import ShareStore
from tests.conftest import DEEP

REPORT_US = 5_000_000
ACTIVE_US = 15_000_000
T0 = 1_700_000_000_000_000


def roomy() -> Check:
    """A fixed window that is never spent: these tests are about the shares."""
    return Check(f"t:{{{uuid.uuid4().hex}}}", CheckArgs(1, 0, 0, 10**12, 60_000_000, 0, 0, 0))


async def shares_at_rest(store: ShareStore, rate: float, demands: list[float]) -> list[float]:
    """Every Envoy reports its demand twice (the second round sees everyone's), then the shares of round two."""
    check = roomy()
    out: list[float] = []
    for rnd in (1, 2):
        out = []
        for i, d in enumerate(demands):
            now = T0 + rnd * REPORT_US + i
            seen = round(d * 5)
            answer = await store.report(check, f"e{i}", seen, seen, rate, ACTIVE_US, REPORT_US, True, now)
            out.append(answer.share)
    return out


@settings(max_examples=2_000 if DEEP else 60, deadline=None)
@given(
    rate=st.integers(1, 100_000),
    demands=st.lists(st.one_of(st.just(0.0), st.floats(0.2, 200_000.0)), min_size=1, max_size=12),
)
async def test_shares_are_bounded_fair_and_never_zero(
    default_redis: EmbeddedRedis, rate: int, demands: list[float]
) -> None:
    client = connect(default_redis.url)
    try:
        shares = await shares_at_rest(ShareStore(client), float(rate), demands)
    finally:
        await client.close()
    measured = [round(d * 5) / 5 for d in demands]  # what the script sees: whole requests over 5 s
    assert sum(shares) <= rate * 1.0001 + 0.001 * len(shares)
    assert all(s > 0 for s in shares)
    busy = [i for i, d in enumerate(measured) if d > 0]
    idle = [i for i, d in enumerate(measured) if d == 0]
    even = rate / len(demands)
    floor = min(even, max(1.0, even / 10)) if busy else even  # a tenth of an equal split; all of it if none is busy
    assert all(abs(shares[i] - floor) < 0.002 for i in idle)
    left = rate - floor * len(idle)
    if busy and sum(measured[i] for i in busy) <= left:  # enough for everyone: each gets at least its demand,
        assert all(shares[i] >= measured[i] - 0.002 for i in busy)
        assert abs(sum(shares[i] for i in busy) - left) < 0.002 * len(busy) + 1e-6 * rate  # and the rest is spread
    elif busy:  # not enough: max-min fair, nobody below the smaller of its demand and an equal split
        equal = left / len(busy)
        assert all(shares[i] >= min(measured[i], equal) - 0.002 for i in busy)


async def test_an_envoy_gone_quiet_gives_its_share_back(default_redis: EmbeddedRedis) -> None:
    client = connect(default_redis.url)
    store = ShareStore(client)
    check = roomy()
    try:
        for i in range(2):
            await store.report(check, f"e{i}", 500, 0, 10.0, ACTIVE_US, REPORT_US, True, T0 + i)
        answer = await store.report(check, "e0", 500, 0, 10.0, ACTIVE_US, REPORT_US, True, T0 + REPORT_US)
        assert (answer.share, answer.active) == (5.0, 2)
        later = T0 + REPORT_US + ACTIVE_US + 1  # e1 has not reported for longer than the active window
        answer = await store.report(check, "e0", 500, 0, 10.0, ACTIVE_US, REPORT_US, True, later)
        assert (answer.share, answer.active) == (10.0, 1)
    finally:
        await client.close()


async def test_allowed_requests_are_charged_to_the_rules_counter_until_it_is_spent(
    default_redis: EmbeddedRedis,
) -> None:
    client = connect(default_redis.url)
    store = ShareStore(client)
    window = Check(f"t:{{{uuid.uuid4().hex}}}", CheckArgs(1, 0, 0, 10, 60_000_000, 0, 0, 0))  # 10 per minute
    start = T0 - T0 % 60_000_000
    try:
        first = await store.report(window, "e0", 6, 6, 10 / 60, ACTIVE_US, REPORT_US, True, start + 1_000_000)
        assert first.spent_us == 0
        second = await store.report(window, "e1", 7, 5, 10 / 60, ACTIVE_US, REPORT_US, True, start + 2_000_000)
        assert second.spent_us == 58_000_000  # 11 charged of 10: no room until the window ends
        peek = await store.report(window, "e0", -1, 0, 10 / 60, ACTIVE_US, REPORT_US, True, start + 3_000_000)
        assert peek.spent_us == 57_000_000  # a refresh sees it too, and charges nothing
        assert await client.client.hget(window.key, "c") == b"11"  # the RLS path's own counter
        again = await store.report(window, "e0", 1, 1, 10 / 60, ACTIVE_US, REPORT_US, True, start + 61_000_000)
        assert again.spent_us == 0  # the next window
        bucket = await store.report(window, "e0", 50, 50, 10 / 60, ACTIVE_US, REPORT_US, False, start + 62_000_000)
        assert bucket.spent_us == 0  # not asked: a token bucket is governed by the shares alone
    finally:
        await client.close()


async def test_a_report_spanning_several_windows_charges_the_current_windows_part(
    default_redis: EmbeddedRedis,
) -> None:
    """Envoy reports every 5 s; 40 allowed over those 5.1 s on a 10-per-second window is under 8 per second:
    only the current window's part (40 x 1 s / 5.1 s, rounded: 8) is charged, so the window is not spent. Charged in
    whole, it would be spent (40 of 10) although the rate was never reached."""
    client = connect(default_redis.url)
    store = ShareStore(client)
    window = Check(f"t:{{{uuid.uuid4().hex}}}", CheckArgs(1, 0, 0, 10, 1_000_000, 0, 0, 0))  # 10 per second
    start = T0 - T0 % 1_000_000
    try:
        await store.report(window, "e0", 0, 0, 10.0, ACTIVE_US, REPORT_US, True, start, window_us=1_000_000)
        later = start + REPORT_US + 100_000
        answer = await store.report(window, "e0", 40, 40, 10.0, ACTIVE_US, REPORT_US, True, later, window_us=1_000_000)
        assert answer.spent_us == 0
        assert await client.client.hget(window.key, "c") == b"8"
        whole = await store.report(window, "e1", 40, 40, 10.0, ACTIVE_US, REPORT_US, True, later + 1)
        assert whole.spent_us > 0  # without the window (0): everything charged, the window spent
    finally:
        await client.close()
