"""`ratelimitd serve --help` shows every flag's default, and the README's flag table says the same."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def serve_help() -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RATELIMITD_")}  # they would change defaults
    env["COLUMNS"] = "1000"  # each option's help on one line
    cmd = [sys.executable, "-m", "ratelimitd", "serve", "--help"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=60).stdout


def test_help_shows_every_default_and_the_readme_matches_it() -> None:
    text = serve_help()
    in_help = dict(re.findall(r"^  (--[a-z-]+)(?: [A-Z_{},a-z]+)?\s.*?\(default: ([^)]*)\)$", text, re.MULTILINE))
    options = set(re.findall(r"^  (--[a-z-]+)", text, re.MULTILINE)) - {"--help"}
    assert options and options == set(in_help), sorted(options ^ set(in_help))  # every option shows its default
    in_readme = dict(re.findall(r"^\| `(--[a-z-]+)` \| `([^`]*)` \|", README.read_text(), re.MULTILINE))
    assert in_readme == in_help
