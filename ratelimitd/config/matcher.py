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


def match(root: dict[str, Level], entries: tuple[tuple[str, str], ...]) -> Match | None:
    children = root
    node: Node | None = None
    values: list[str] = []
    for key, value in entries:
        level = children.get(key)
        if level is None:
            return None
        node = level.exact.get(value)
        counter_value = value
        if node is None:
            for regex, pattern, shared, candidate in level.patterns:
                if regex.fullmatch(value):
                    node = candidate
                    if shared:
                        counter_value = pattern
                    break
            else:
                node = level.default
            if node is None:
                return None
        values.append(counter_value)
        children = node.children
    if node is None or node.rule is None:
        return None
    return Match(node.rule, tuple(values))
