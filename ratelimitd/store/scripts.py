"""Find the Lua sources and assemble them into the one script the store calls by EVALSHA."""

from __future__ import annotations

from importlib.resources import files

ALGORITHM_PARTS = (
    "lib.lua",
    "fixed_window.lua",
    "token_bucket.lua",
    "sliding_window.lua",
    "sliding_log.lua",
    "quota.lua",
)


def read_lua(name: str) -> str:
    """Lua sources are package data (`ratelimitd/lua`, a link to the checkout's `lua/`), so an installed
    wheel finds them wherever it lives."""
    return files("ratelimitd").joinpath("lua", name).read_text(encoding="utf-8")


def _assemble(entry: str) -> str:
    return "\n".join(read_lua(name) for name in (*ALGORITHM_PARTS, entry))


def batch_script() -> str:
    """Decide a batch of requests (lua/batch.lua)."""
    return _assemble("batch.lua")


def admin_script() -> str:
    """Admin operations (lua/admin.lua)."""
    return _assemble("admin.lua")


def rlqs_script() -> str:
    """RLQS shares and charges (lua/rlqs_share.lua)."""
    return _assemble("rlqs_share.lua")


def refund_script() -> str:
    """Undo a cross-slot reservation (lua/refund.lua)."""
    return _assemble("refund.lua")
