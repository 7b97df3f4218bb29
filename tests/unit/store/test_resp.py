"""The fast path's framed batch command is byte for byte what hiredis makes of the generic layout."""

from __future__ import annotations

from typing import Any

import hiredis
from hypothesis import given
from hypothesis import strategies as st

from ratelimitd.store.checks import Check, CheckBatch
from ratelimitd.store.resp import pack_evalsha
from ratelimitd.store.script_call import encode_batch

ints = st.integers(min_value=-(2**53), max_value=2**53)
checks = st.builds(Check, st.text(min_size=1, max_size=40), st.tuples(*[ints] * 8))
requests = st.builds(CheckBatch, st.lists(checks, min_size=1, max_size=4).map(tuple), st.booleans())
batches = st.lists(requests, max_size=6)


@given(batches, st.none() | st.integers(min_value=0, max_value=2**62))
def test_pack_evalsha_matches_hiredis(requests: list[CheckBatch], now_us: int | None) -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    keys, args = encode_batch(requests, now_us)
    command: tuple[Any, ...] = ("EVALSHA", sha, len(keys), *keys, *args)
    expected = hiredis.pack_command(command)
    assert pack_evalsha(sha, requests, now_us) == expected
    assert pack_evalsha(sha, requests, now_us) == expected  # again, from the cached pieces
