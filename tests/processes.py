"""Starting, polling and stopping the processes tests run (services, gateways, sentinels), written once."""

from __future__ import annotations

import signal
import subprocess  # nosec B404
import time
from collections.abc import Callable


def wait_ready(
    proc: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    timeout: float,
    what: str,
    log: Callable[[], str] = lambda: "",
) -> None:
    """Poll `ready` until it holds; fail at once, with the process's log, if the process exits first, and stop
    it when it is not ready in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log()[-3000:]}")
        if ready():
            return
        time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"{what} not ready within {timeout}s:\n{log()[-3000:]}")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
    """Send `sig`, wait up to `timeout`, then kill; the exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)
