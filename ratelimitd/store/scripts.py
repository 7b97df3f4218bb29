"""Find the Lua sources and assemble them into the one script the store calls by EVALSHA."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

ALGORITHM_PARTS = (
    "lib.lua",
    "fixed_window.lua",
    "token_bucket.lua",
    "sliding_window.lua",
    "sliding_log.lua",
    "quota.lua",
)


def lua_dir() -> Path:
    """`RATELIMITD_LUA_DIR`, the source tree's `lua/` (editable install), or the installed copy."""
    candidates = [
        os.environ.get("RATELIMITD_LUA_DIR", ""),
        str(Path(__file__).resolve().parents[2] / "lua"),
        str(Path(sys.prefix) / "share" / "ratelimitd" / "lua"),
    ]
    for c in candidates:
        if c and (Path(c) / "batch.lua").is_file():
            return Path(c)
    raise FileNotFoundError("cannot find ratelimitd's lua/ directory; set RATELIMITD_LUA_DIR")


def _assemble(entry: str) -> str:
    base = lua_dir()
    return "\n".join((base / name).read_text(encoding="utf-8") for name in (*ALGORITHM_PARTS, entry))


def batch_script() -> str:
    """Decide a batch of requests (lua/batch.lua)."""
    return _assemble("batch.lua")


def admin_script() -> str:
    """Admin operations (lua/admin.lua)."""
    return _assemble("admin.lua")


def refund_script() -> str:
    """Undo a cross-slot reservation (lua/refund.lua)."""
    return _assemble("refund.lua")


def script_sha(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()  # Redis names scripts by SHA-1
