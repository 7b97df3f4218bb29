"""Real multi-server Redis topologies for tests: a 6-node cluster and a Sentinel set-up, on loopback."""

from __future__ import annotations

import random
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from ratelimitd.store.embedded import EmbeddedRedis, cli_for, default_server
from tests.processes import stop


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port(taken: set[int]) -> int:
    """A port whose cluster-bus twin (port + 10000) is free too."""
    while True:
        p = random.randint(20000, 29999)
        if p not in taken and _bindable(p) and _bindable(p + 10000):
            taken.add(p)
            return p


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (redis.RedisError, OSError):
            value = None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class LocalCluster:
    """3 masters + 3 replicas built with `redis-cli --cluster create`."""

    def __init__(self, binary: str | None = None, size: int = 6) -> None:
        self.binary = binary or default_server()
        taken: set[int] = set()
        self.nodes = [
            EmbeddedRedis(
                self.binary,
                port=cluster_port(taken),
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1500",
                ),
            )
            for _ in range(size)
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])

    def start(self) -> LocalCluster:
        for n in self.nodes:
            n.start()
        addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [cli_for(self.binary), "--cluster", "create", *addrs, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_for(self.healthy, 30, "cluster_state:ok on every node")
        return self

    def healthy(self) -> bool:
        for n in self.nodes:
            if n.proc is None:
                continue
            info = redis.Redis(port=n.port, socket_timeout=1).execute_command("CLUSTER", "INFO")
            if b"cluster_state:ok" not in info:
                return False
        return True

    def client(self) -> redis.RedisCluster:
        alive = next(n for n in self.nodes if n.proc is not None)
        return redis.RedisCluster(host="127.0.0.1", port=alive.port)

    def master_of(self, key: str) -> EmbeddedRedis:
        node = self.client().get_node_from_key(key)
        return next(n for n in self.nodes if n.port == node.port)

    def close(self) -> None:
        for n in self.nodes:
            n.close()


SENTINEL_CONF = """port {port}
bind 127.0.0.1
daemonize no
sentinel monitor mymaster 127.0.0.1 {master} 2
sentinel down-after-milliseconds mymaster 1000
sentinel failover-timeout mymaster 4000
sentinel parallel-syncs mymaster 1
"""


class LocalSentinel:
    """One master, one replica and three sentinels watching them."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or default_server()
        self.master = EmbeddedRedis(self.binary)
        self.replica = EmbeddedRedis(self.binary, extra_args=("--replicaof", "127.0.0.1", str(self.master.port)))
        self.dir = tempfile.TemporaryDirectory(prefix="ratelimitd-sentinel-")
        self.sentinels: list[tuple[int, subprocess.Popen[bytes]]] = []

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p, _ in self.sentinels) + "/mymaster"

    def start(self) -> LocalSentinel:
        self.master.start()
        self.replica.start()
        wait_for(
            lambda: redis.Redis(port=self.master.port).info("replication")["connected_slaves"] >= 1,
            20,
            "the replica to attach",
        )
        taken: set[int] = set()
        for i in range(3):
            port = cluster_port(taken)
            conf = Path(self.dir.name) / f"sentinel-{i}.conf"
            conf.write_text(SENTINEL_CONF.format(port=port, master=self.master.port))
            proc = subprocess.Popen(
                [self.binary, str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            self.sentinels.append((port, proc))
        for port, _ in self.sentinels:
            wait_for(
                lambda p=port: redis.Redis(port=p).sentinel_masters()["mymaster"]["num-slaves"],  # type: ignore[call-overload]
                20,
                "sentinels to see the replica",
            )
        return self

    def current_master_port(self) -> int:
        port = self.sentinels[0][0]
        addr = redis.Redis(port=port).sentinel_get_master_addr_by_name("mymaster")
        assert isinstance(addr, tuple | list)
        return int(addr[1])

    def close(self) -> None:
        for _, proc in self.sentinels:
            stop(proc, timeout=5)
        self.master.close()
        self.replica.close()
        self.dir.cleanup()
