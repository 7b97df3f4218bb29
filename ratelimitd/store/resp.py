"""The batch script call as RESP bytes, joined from pieces cached per check.

`hiredis.pack_command` converts and frames every argument on every call: ~6 µs per request in a 12-request
batch (measured), while a check's key and eight arguments are the same on every request of a cached plan.
Joining their cached pieces costs under 1 µs per request. Only the standalone fast path uses this
(`fast_client.py`); redis-py packs its own commands for cluster and Sentinel.
"""

from __future__ import annotations

from collections.abc import Sequence

from ratelimitd.store.checks import Check, CheckBatch

# Checks seen lately (plans are cached, so the same ones recur); cleared whole when full, like the plans.
_MAX_PIECES = 100_000
_pieces: dict[Check, tuple[bytes, bytes, int]] = {}


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


_SMALL = tuple(bulk(b"%d" % i) for i in range(256))
_EMPTY = bulk(b"")


def _int(n: int) -> bytes:
    return _SMALL[n] if 0 <= n < 256 else bulk(b"%d" % n)


def _check_pieces(check: Check) -> tuple[bytes, bytes, int]:
    """(the key, the arguments, how many arguments) of one check, framed."""
    found = _pieces.get(check)
    if found is None:
        if len(_pieces) >= _MAX_PIECES:
            _pieces.clear()
        found = _pieces[check] = (bulk(check.key.encode()), b"".join(_int(a) for a in check.args), len(check.args))
    return found


def pack_evalsha(sha: str, requests: Sequence[CheckBatch], now_us: int | None) -> bytes:
    """EVALSHA sha numkeys keys... now requests (checks dry_run check-args...)... — the layout of
    `redis_store.encode_batch`, byte for byte what `hiredis.pack_command` makes of it (tested)."""
    keys: list[bytes] = []
    args: list[bytes] = [_EMPTY if now_us is None else _int(now_us), _int(len(requests))]
    count = 2 + 2 * len(requests)  # arguments so far and per request
    for req in requests:
        args.append(_int(len(req.checks)))
        args.append(_SMALL[1 if req.dry_run else 0])
        for check in req.checks:
            key, check_args, n_args = _check_pieces(check)
            keys.append(key)
            args.append(check_args)
            count += n_args
    head = b"*%d\r\n$7\r\nEVALSHA\r\n%s%s" % (3 + len(keys) + count, bulk(sha.encode()), _int(len(keys)))
    return head + b"".join(keys) + b"".join(args)
