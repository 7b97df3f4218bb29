"""Hot reload: watch the config path, validate a change in full, swap it in atomically.

An invalid change is logged as `file: path: reason` lines and counted; the config in force stays.
Only YAML files count (editor swap files and dot-files are ignored), and files edited in place are
seen (no symlink-swap dance needed, unlike envoyproxy/ratelimit's default).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from watchfiles import Change, awatch

from ratelimitd.config.holder import ConfigHolder
from ratelimitd.config.loader import YAML_SUFFIXES, ConfigError, load_config

log = logging.getLogger(__name__)


class ConfigReloader:
    def __init__(self, path: str, holder: ConfigHolder, counted: Callable[[bool], None] = lambda _: None) -> None:
        """`counted` hears of every attempt: True when it applied, False when it was rejected."""
        self.path = Path(path)
        self.holder = holder
        self.counted = counted
        self._lock = asyncio.Lock()

    def reload(self, reason: str) -> bool:
        try:
            config = load_config(self.path)
        except ConfigError as err:
            self.counted(False)
            for problem in err.problems:
                log.error("config rejected (%s), previous config stays in force: %s", reason, problem)
            return False
        self.holder.set_files(config)
        self.counted(True)
        log.info("config reloaded (%s): %s", reason, "; ".join(config.summary()) or "no domains")
        return True

    def _relevant(self, change: Change, path: str) -> bool:
        p = Path(path)
        if self.path.is_file() or not self.path.exists():
            return p.name == self.path.name
        return p.suffix in YAML_SUFFIXES and not p.name.startswith(".")

    async def watch(self, stop: asyncio.Event) -> None:
        root = self.path if self.path.is_dir() else self.path.parent
        async for _ in awatch(
            root, watch_filter=self._relevant, debounce=100, step=50, stop_event=stop, recursive=False
        ):
            self.reload("file change")
