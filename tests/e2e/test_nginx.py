"""A real NGINX (Debian's nginx-light) using auth_request against ratelimitd's forward-auth endpoint,
turning a denial into 429 for the client, as in examples/nginx/nginx.conf."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from ratelimitd.store.embedded import EmbeddedRedis, free_port
from tests.e2e.gateways import ROOT, Process, http_get, nginx_binary
from tests.service import ServiceProcess

pytestmark = pytest.mark.slow
EXAMPLE = ROOT / "examples" / "nginx"


@pytest.fixture(scope="module")
def ratelimitd(default_redis: EmbeddedRedis) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(EXAMPLE / "ratelimit", default_redis.url, "--key-prefix", f"ng-{uuid.uuid4().hex[:8]}:")
    yield svc.start()
    svc.stop()


@pytest.fixture(scope="module")
def nginx(ratelimitd: ServiceProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    binary = nginx_binary()
    work = tmp_path_factory.mktemp("nginx")
    edge, app = free_port(), free_port()
    text = (EXAMPLE / "nginx.conf").read_text()
    text = (
        text.replace("127.0.0.1:8000", f"127.0.0.1:{edge}")
        .replace("127.0.0.1:9000", f"127.0.0.1:{app}")
        .replace("127.0.0.1:8080", f"127.0.0.1:{ratelimitd.http_port}")
    )
    temps = "".join(
        f"    {name}_temp_path {work}/{name};\n" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = text.replace(
        "http {\n",
        "http {\n    access_log off;\n"
        + temps
        + f'    server {{ listen 127.0.0.1:{app}; location / {{ return 200 "app ok\\n"; }} }}\n',
        1,
    )
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = work / "nginx.conf"
    conf.write_text(f"{user}daemon off;\npid {work}/nginx.pid;\nerror_log {work}/error.log;\n{text}")
    proc = Process([binary, "-c", str(conf), "-p", str(work)], f"http://127.0.0.1:{app}/").start()
    yield edge
    proc.stop()


def test_allowed_then_429_with_retry_after(nginx: int) -> None:
    url = f"http://127.0.0.1:{nginx}/orders"
    results = [http_get(url) for _ in range(4)]
    assert [r[0] for r in results] == [200, 200, 200, 429]  # per-client: 3 per minute
    assert results[0][2] == "app ok\n"
    _, headers, body = results[-1]
    assert body == "rate limited\n" and 0 < int(headers["retry-after"]) <= 60
    assert headers["ratelimit"].startswith('"per-client";r=0;')


def test_path_limit_from_original_uri(nginx: int, ratelimitd: ServiceProcess) -> None:
    # the per-client limit is exhausted by the test above; this proves the path descriptor reaches ratelimitd
    status, _, _ = http_get(f"http://127.0.0.1:{nginx}/admin/users")
    assert status == 429
    _, _, body = http_get(
        f"http://127.0.0.1:{ratelimitd.http_port}/v1/forward-auth/edge-http",
        {"X-Forwarded-For": "10.1.1.1", "X-Original-URI": "/admin/x?y=1"},
    )
    assert '"rule": "admin-paths"' in body
