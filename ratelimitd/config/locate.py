"""Where in a YAML text a config problem is: the line of the node its path names (`descriptors[0].rate_limit`),
so an editor can show each problem at its line."""

from __future__ import annotations

import re

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def line_of(text: str, path: str) -> int | None:
    """1-based line of the node at `path`, or of the deepest part of it that exists; for a YAML syntax error,
    the error's line. None when the text has no node at all."""
    try:
        node: Node | None = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        return None if mark is None else int(mark.line) + 1
    if node is None:
        return None
    line = int(node.start_mark.line) + 1
    if path.startswith("("):
        return line
    for name, index in _STEP.findall(path):
        if name and isinstance(node, MappingNode):
            found = next(((k, v) for k, v in node.value if getattr(k, "value", None) == name), None)
            if found is None:
                break
            line, node = int(found[0].start_mark.line) + 1, found[1]
        elif index and isinstance(node, SequenceNode) and int(index) < len(node.value):
            node = node.value[int(index)]
            line = int(node.start_mark.line) + 1
        else:
            break
    return line
