"""The descriptor tree and envoyproxy/ratelimit's matching walk.

Per level: exact value, then `*` patterns in config order, then the key-only default; no backtracking;
a rule applies only if the walk ends on the request descriptor's last entry. Unlike envoyproxy/ratelimit,
patterns match the value alone (not "key_value"), so a key can never be confused with part of a value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ratelimitd.config.rules import Rule


@dataclass(slots=True)
class Node:
    rule: Rule | None = None
    allow_listed: bool = False
    children: dict[str, Level] = field(default_factory=dict)


@dataclass(slots=True)
class Level:
    exact: dict[str, Node] = field(default_factory=dict)
    patterns: list[tuple[re.Pattern[str], str, bool, Node]] = field(default_factory=list)
    default: Node | None = None


@dataclass(frozen=True, slots=True)
class Match:
    """A matched rule and the values that identify its counter (a shared pattern replaces its value)."""

    rule: Rule
    counter_values: tuple[str, ...]


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """`*` matches any run of characters (including none), anywhere and several times."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def _step(level: Level, value: str) -> tuple[Node, str] | None:
    """The node one level down for `value`, and the value its counter is known by."""
    node = level.exact.get(value)
    if node is not None:
        return node, value
    for regex, pattern, shared, candidate in level.patterns:
        if regex.fullmatch(value):
            return candidate, pattern if shared else value
    return (level.default, value) if level.default is not None else None


def match(root: dict[str, Level], entries: tuple[tuple[str, str], ...]) -> Match | None:
    children = root
    node: Node | None = None
    values: list[str] = []
    for key, value in entries:
        level = children.get(key)
        found = None if level is None else _step(level, value)
        if found is None:
            return None
        node, counter_value = found
        values.append(counter_value)
        children = node.children
    if node is None or node.rule is None:
        return None
    return Match(node.rule, tuple(values))


def match_map(root: dict[str, Level], bucket: dict[str, str]) -> tuple[Match | None, tuple[tuple[str, str], ...]]:
    """An unordered map (an RLQS bucket id) against the tree: at each level the entry whose key the level names
    (the first in sorted order if it names several), until no key matches; then `match` on the walk."""
    children, entries, used = root, [], set()
    while True:
        keys = sorted(k for k in children if k in bucket and k not in used)
        found = None
        for key in keys:
            found = _step(children[key], bucket[key])
            if found is not None:
                entries.append((key, bucket[key]))
                used.add(key)
                break
        if found is None:
            break
        children = found[0].children
    walked = tuple(entries)
    return (match(root, walked) if walked else None), walked
