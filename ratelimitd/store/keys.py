"""The one encoding of a limit's identity into a Redis key.

Every component is percent-escaped (so `|`, `{`, `}` and `%` never appear raw inside one), joined by
`|`, and the whole identity sits inside one hash tag: two different limits never share a key, and all
keys of one limit land in one Redis Cluster slot. With `hash_values` the request's values are replaced
by a SHA-256 digest so secrets such as API keys never appear in Redis.
"""

from __future__ import annotations

import binascii
import hashlib
from urllib.parse import quote


def _esc(part: str) -> str:
    return quote(part, safe="")


class KeyEncoder:
    def __init__(self, prefix: str = "rl:", hash_values: bool = False) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("key prefix must not contain '{' or '}' (they delimit the cluster hash tag)")
        self.prefix = prefix
        self.hash_values = hash_values

    def rule_part(self, domain: str, rule_ident: str) -> str:
        """The constant head of every key of one rule; computed once per rule."""
        return f"{self.prefix}{{{_esc(domain)}|{_esc(rule_ident)}"

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
