"""Start real `ratelimitd serve` processes for tests and wait until they report healthy."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import grpc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf import wrappers_pb2

from ratelimitd.store.embedded import free_port
from tests.processes import stop, wait_ready

RLS = rls_pb2.RateLimitResponse


class ServiceProcess:
    def __init__(
        self,
        config: Path | str,
        redis_url: str | None,
        *extra: str,
        env: dict[str, str] | None = None,
        command: tuple[str, ...] = (sys.executable, "-m", "ratelimitd"),
        cwd: Path | None = None,
    ):
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.cwd = cwd
        self.args = [
            *command,
            "serve",
            "--config",
            str(config),
            "--grpc-listen",
            f"127.0.0.1:{self.grpc_port}",
            "--http-listen",
            f"127.0.0.1:{self.http_port}",
            *(["--redis-url", redis_url] if redis_url else []),
            *([] if "--workers" in extra else ["--workers", "1"]),
            *extra,
        ]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="ratelimitd-", suffix=".log", delete=False)  # noqa: SIM115
        self.channel: grpc.Channel | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout: float = 20.0) -> ServiceProcess:
        self.proc = subprocess.Popen(self.args, env=self.env, cwd=self.cwd, stdout=self._log, stderr=subprocess.STDOUT)
        wait_ready(self.proc, self.healthy, timeout, "ratelimitd", self.log_text)
        self.channel = grpc.insecure_channel(self.target)
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=0.5) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stub(self) -> rls_pb2_grpc.RateLimitServiceStub:
        assert self.channel is not None
        return rls_pb2_grpc.RateLimitServiceStub(self.channel)

    def check(
        self, domain: str, *descriptors: list[tuple[str, str]] | ratelimit_pb2.RateLimitDescriptor, hits: int = 0
    ) -> rls_pb2.RateLimitResponse:
        req = rls_pb2.RateLimitRequest(domain=domain, hits_addend=hits)
        for d in descriptors:
            req.descriptors.append(d if isinstance(d, ratelimit_pb2.RateLimitDescriptor) else descriptor(d))
        return self.stub().ShouldRateLimit(req, timeout=5)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is None:
            return 0
        code = stop(self.proc, sig, timeout)
        self.proc = None
        return code

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        """Stop; a clean exit (code 0) is required only when the block passed, so a failure inside the block is
        the one reported, not hidden behind the exit code."""
        code = self.stop()
        if exc_type is None:
            assert code == 0, f"ratelimitd exited with {code}:\n{self.log_text()}"

    def metric(self, name: str, labels: str = "") -> float:
        """The sum of a metric's samples on /metrics whose labels contain every one of `labels` (comma-separated
        `key="value"` parts)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        found = re.findall(rf"^{name}(?:{{([^}}]*)}})? (\S+)$", text, re.M)
        return sum(float(v) for got, v in found if all(x in got for x in labels.split(",") if x))

    def log_text(self) -> str:
        """Everything the process wrote (JSON log lines)."""
        return Path(self._log.name).read_text(errors="replace")


def descriptor(
    entries: list[tuple[str, str]], hits: int | None = None, limit: tuple[int, int] | None = None
) -> ratelimit_pb2.RateLimitDescriptor:
    d = ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries]
    )
    if hits is not None:
        d.hits_addend.CopyFrom(wrappers_pb2.UInt64Value(value=hits))
    if limit is not None:
        d.limit.requests_per_unit, d.limit.unit = limit
    return d
