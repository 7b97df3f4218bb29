"""The service's own wall clock, used only to pre-compute calendar boundaries for quotas.

Decisions take time from Redis; `RATELIMITD_TEST_CLOCK_OFFSET` (seconds) shifts this clock so tests can
prove that a skewed instance still decides exactly like the others.
"""

from __future__ import annotations

import os
import time

_OFFSET = float(os.environ.get("RATELIMITD_TEST_CLOCK_OFFSET", "0") or 0)


def wall_time() -> float:
    return time.time() + _OFFSET
