"""Read YAML files into a validated, compiled `Config`; report every problem as `file: path: reason`."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ratelimitd.config.matcher import Level, Node, compile_pattern
from ratelimitd.config.models import DescriptorModel, DomainModel, HttpDescriptorModel, RateLimitModel
from ratelimitd.config.rules import Rule
from ratelimitd.config.units import parse_unit

YAML_SUFFIXES = (".yaml", ".yml")


class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: `yes`, `no`, `on`, `off` stay strings (descriptor values such as `value: yes`)."""


_Yaml12Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.reason}"


class ConfigError(Exception):
    """All problems found in one load; the previous config stays in force."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True, slots=True)
class Domain:
    name: str
    file: str
    tree: dict[str, Level]
    rules: tuple[Rule, ...]
    http_descriptors: tuple[HttpDescriptorModel, ...] = ()


@dataclass(frozen=True, slots=True)
class Config:
    domains: dict[str, Domain] = field(default_factory=dict)

    def summary(self) -> list[str]:
        lines = []
        for d in self.domains.values():
            algos = sorted({r.algorithm for r in d.rules if not r.unlimited})
            lines.append(f"{d.file}: domain '{d.name}': {len(d.rules)} rules ({', '.join(algos) or 'none'})")
        return lines


def load_or_report(path: str | Path) -> Config | None:
    """The config at `path`, or None after printing every problem to stderr (the command-line tools' way)."""
    try:
        return load_config(path)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return None


def config_files(path: Path) -> list[Path]:
    """A file, or the YAML files of a directory; dot-files and editor leftovers are ignored."""
    if path.is_dir():
        return sorted(
            p for p in path.iterdir() if p.is_file() and p.suffix in YAML_SUFFIXES and not p.name.startswith(".")
        )
    return [path]


def load_config(path: str | Path) -> Config:
    root = Path(path)
    if not root.exists():
        raise ConfigError([Problem(str(root), "(file)", "no such file or directory")])
    problems: list[Problem] = []
    domains: dict[str, Domain] = {}
    for file in config_files(root):
        try:
            domain = load_domain_file(file)
        except ConfigError as err:
            problems.extend(err.problems)
            continue
        if domain.name in domains:
            problems.append(
                Problem(
                    str(file),
                    "domain",
                    f"duplicate domain '{domain.name}' (also in {domains[domain.name].file})",
                )
            )
            continue
        domains[domain.name] = domain
    if problems:
        raise ConfigError(problems)
    return Config(domains)


def load_domain_file(file: Path) -> Domain:
    name = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError([Problem(name, "(file)", err.strerror or str(err))]) from None
    except UnicodeDecodeError as err:
        raise ConfigError([Problem(name, "(yaml)", f"invalid YAML: {err}")]) from None
    return parse_domain_text(text, name)


def parse_domain_text(text: str, source: str) -> Domain:
    """One domain from YAML text in the file format; `source` names it in problems (a file, or a domain)."""
    try:
        data = yaml.load(text, Loader=_Yaml12Loader)  # nosec B506
    except yaml.YAMLError as err:
        raise ConfigError([Problem(source, "(yaml)", f"invalid YAML: {err}".replace("\n", " "))]) from None
    return parse_domain(data, source)


def parse_domain(data: Any, file: str) -> Domain:
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, "(root)", "config file must be a mapping with 'domain' and 'descriptors'")])
    try:
        model = DomainModel.model_validate(data)
    except ValidationError as err:
        raise ConfigError([_problem(file, e) for e in err.errors()]) from None
    builder = _TreeBuilder(model.domain)
    tree = builder.level_map(model.descriptors, ())
    return Domain(model.domain, file, tree, tuple(builder.rules), tuple(model.http_descriptors))


def _problem(file: str, error: Any) -> Problem:
    loc = tuple(error["loc"])
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "(root)"
    reason = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        reason = f"unknown key '{loc[-1]}'"
    elif error["type"] == "model_type":
        reason = f"must be a mapping, not {type(error['input']).__name__}"
    elif error["type"] == "missing":
        reason = f"missing required key '{loc[-1]}'"
    return Problem(file, path, reason)


class _TreeBuilder:
    def __init__(self, domain: str) -> None:
        self.domain = domain
        self.rules: list[Rule] = []

    def level_map(self, descriptors: Iterable[DescriptorModel], path: tuple[tuple[str, str], ...]) -> dict[str, Level]:
        levels: dict[str, Level] = {}
        for d in descriptors:
            level = levels.setdefault(d.key, Level())
            value = d.value or ""
            node_path = (*path, (d.key, value))
            node = Node(children=self.level_map(d.descriptors, node_path))
            if d.rate_limit is not None:
                node.rule = self.rule(d, d.rate_limit, node_path)
                self.rules.append(node.rule)
            else:
                node.allow_listed = not d.descriptors
            if not value:
                level.default = node
            elif "*" in value:
                level.patterns.append((compile_pattern(value), value, d.share_threshold, node))
            else:
                level.exact[value] = node
        return levels

    def rule(self, d: DescriptorModel, rl: RateLimitModel, path: tuple[tuple[str, str], ...]) -> Rule:
        stats_key = ".".join(f"{k}_{v}" if v else k for k, v in path)
        replaces = frozenset(r.name for r in rl.replaces)
        if rl.unlimited:
            ident = json.dumps(["unlimited", path], separators=(",", ":"))
            return Rule(
                self.domain,
                stats_key,
                ident,
                0,
                parse_unit("second"),
                name=rl.name,
                unlimited=True,
                replaces=replaces,
                detailed_metric=d.detailed_metric,
                path=path,
            )
        unit = parse_unit(rl.unit or "")
        burst = (rl.burst if rl.burst is not None else rl.requests_per_unit) if rl.algorithm == "token_bucket" else 0
        ident = json.dumps(
            [rl.algorithm, rl.requests_per_unit, unit.name, rl.unit_multiplier, burst, rl.timezone, path],
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return Rule(
            self.domain,
            stats_key,
            ident,
            rl.requests_per_unit,
            unit,
            rl.unit_multiplier,
            rl.algorithm,
            burst,
            rl.timezone,
            rl.name,
            False,
            d.shadow_mode,
            d.quota_mode,
            d.detailed_metric,
            replaces,
            path,
        )
