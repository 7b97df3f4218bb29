"""ratelimitd: an Envoy-compatible rate-limit service whose counters live in Redis Lua scripts."""

__version__ = "0.1.0"
