"""The one encoding of a limit's identity into a Redis key.

Every component is percent-escaped (so `|`, `{`, `}` and `%` never appear raw inside one), joined by
`|`, and the whole identity sits inside one hash tag: two different descriptor sets never share a key,
and all keys of one limit land in one Redis Cluster slot. With `hash_values` the request's values are replaced
by a SHA-256 digest so secrets such as API keys never appear in Redis.
"""

from __future__ import annotations

import binascii
import hashlib
from functools import lru_cache
from urllib.parse import quote


@lru_cache(maxsize=65536)
def _esc(part: str) -> str:
    """Percent-escape everything but [A-Za-z0-9_.~-]; cached, since the same values recur request after request."""
    return quote(part, safe="")


class KeyEncoder:
    def __init__(self, prefix: str = "rl:", hash_values: bool = False) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("key prefix must not contain '{' or '}' (they delimit the cluster hash tag)")
        self.prefix = prefix
        self.hash_values = hash_values
        self._parts: dict[tuple[str, str], str] = {}

    def rule_part(self, domain: str, rule_ident: str) -> str:
        """The constant head of every key of one rule. The rule's identity (algorithm, limit, unit, config
        path: a long JSON text) enters as a 96-bit SHA-256 prefix to keep keys short; two rules would share
        a counter only on a digest collision (about 2^-96 for any pair)."""
        found = self._parts.get((domain, rule_ident))
        if found is None:
            digest = hashlib.sha256(rule_ident.encode()).hexdigest()[:24]
            found = self._parts[(domain, rule_ident)] = f"{self.prefix}{{{_esc(domain)}|{digest}"
            if len(self._parts) > 100_000:  # rules come from config, overrides from callers: stay bounded
                self._parts.clear()
        return found

    def key(self, rule_part: str, values: tuple[str, ...]) -> str:
        if self.hash_values:
            digest = hashlib.sha256("|".join([str(len(values)), *map(_esc, values)]).encode()).hexdigest()
            return f"{rule_part}|#{digest}}}"
        return rule_part + "".join("|" + _esc(v) for v in values) + "}"


def hash_slot(key: str) -> int:
    """Redis Cluster's slot of a key: CRC16/XMODEM of its hash tag (binascii.crc_hqx is that CRC, in C)."""
    data = key.encode()
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return binascii.crc_hqx(data, 0) % 16384
