"""The config in force, shared by the engine, the file reloader and the stored-limits sync."""

from __future__ import annotations

import logging

from ratelimitd.config.loader import Config, Domain

log = logging.getLogger(__name__)


class ConfigHolder:
    """The config snapshot in force; replaced whole, so a request sees one consistent config.

    It merges two sources: the files (`set_files`) and the domains kept in the store (`set_stored`). A domain
    in both is taken from the files: files are the GitOps source of truth, and the admin API refuses to edit
    a file domain, so a clash only arises when a file gains a domain that the store already has."""

    def __init__(self, config: Config) -> None:
        self.files = config
        self.stored: dict[str, Domain] = {}
        self.current = config

    def set_files(self, config: Config) -> None:
        self.files = config
        self._merge()

    def set_stored(self, domains: dict[str, Domain]) -> None:
        self.stored = domains
        self._merge()

    def source(self, domain: str) -> str | None:
        """'file', 'store' or None (unknown)."""
        if domain in self.files.domains:
            return "file"
        return "store" if domain in self.stored else None

    def _merge(self) -> None:
        shadowed = sorted(self.stored.keys() & self.files.domains.keys())
        for name in shadowed:
            log.warning("domain '%s' is in the files and in the store: the files' version is in force", name)
        self.current = Config({**self.stored, **self.files.domains})
