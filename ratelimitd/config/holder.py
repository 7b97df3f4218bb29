"""The config in force, shared by the engine and the reloader."""

from __future__ import annotations

from ratelimitd.config.loader import Config


class ConfigHolder:
    """The config snapshot in force; replaced whole, so a request sees one consistent config."""

    def __init__(self, config: Config) -> None:
        self.current = config
