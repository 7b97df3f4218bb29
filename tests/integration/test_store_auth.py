"""Store credentials come from the URL, work with AUTH and ACL users, and never reach the logs."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from ratelimitd.store.embedded import EmbeddedRedis, server_binaries
from tests.service import RLS, ServiceProcess

CONFIG = "domain: a\ndescriptors:\n  - key: u\n    rate_limit: {unit: hour, requests_per_unit: 1}\n"


@pytest.mark.parametrize(
    ("server_args", "credentials"),
    [
        (("--requirepass", "pw-s3cret"), ":pw-s3cret"),
        (("--user", "default", "off", "--user", "limiter", "on", ">acl-s3cret", "~*", "+@all"), "limiter:acl-s3cret"),
    ],
    ids=["requirepass", "acl-user"],
)
def test_authenticated_store(tmp_path: Path, server_args: tuple[str, ...], credentials: str) -> None:
    (tmp_path / "a.yaml").write_text(CONFIG)
    server = EmbeddedRedis(server_binaries().get("valkey"), extra_args=server_args)
    server.start()
    svc = ServiceProcess(tmp_path, f"redis://{credentials}@127.0.0.1:{server.port}/0").start()
    try:
        u = uuid.uuid4().hex
        assert svc.check("a", [("u", u)]).statuses[0].limit_remaining == 0  # a real store decision
        assert svc.check("a", [("u", u)]).overall_code == RLS.OVER_LIMIT
        assert "s3cret" not in svc.log_text()
    finally:
        svc.stop()
        server.close()


def test_store_url_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(CONFIG)
    server = EmbeddedRedis(extra_args=("--requirepass", "file-s3cret")).start()
    url_file = tmp_path / "store-url"
    url_file.write_text(f"redis://:file-s3cret@127.0.0.1:{server.port}/0\n")
    svc = ServiceProcess(tmp_path / "a.yaml", None, "--redis-url-file", str(url_file)).start()
    try:
        assert svc.check("a", [("u", uuid.uuid4().hex)]).statuses[0].limit_remaining == 0  # a real decision
        assert "s3cret" not in svc.log_text() and "embedded" not in svc.log_text()
    finally:
        svc.stop()
        server.close()


def test_wrong_password_fails_open_and_says_why(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(CONFIG)
    server = EmbeddedRedis(extra_args=("--requirepass", "right-s3cret"))
    server.start()
    svc = ServiceProcess(tmp_path, f"redis://:wrong-s3cret@127.0.0.1:{server.port}/0").start()
    try:
        r = svc.check("a", [("u", uuid.uuid4().hex)])
        assert r.overall_code == RLS.OK and r.statuses[0].limit_remaining == 1  # failure mode allow
        assert "store unavailable" in svc.log_text() and "s3cret" not in svc.log_text()
    finally:
        svc.stop()
        server.close()


def test_rediss_tls_with_acl_user(tmp_path: Path) -> None:
    from tests.certs import make_certs
    from tests.tls_proxy import TlsProxy

    (tmp_path / "a.yaml").write_text(CONFIG)
    certs = make_certs(tmp_path)
    server = EmbeddedRedis(
        extra_args=("--user", "default", "off", "--user", "tls-user", "on", ">tls-s3cret", "~*", "+@all")
    ).start()
    proxy = TlsProxy(server.port, certs.server_cert, certs.server_key).start()
    url = f"rediss://tls-user:tls-s3cret@127.0.0.1:{proxy.port}/0?ssl_ca_certs={certs.ca}"
    svc = ServiceProcess(tmp_path, url).start()
    try:
        u = uuid.uuid4().hex
        assert svc.check("a", [("u", u)]).statuses[0].limit_remaining == 0  # a real decision, over TLS
        assert svc.check("a", [("u", u)]).overall_code == RLS.OVER_LIMIT
        assert "s3cret" not in svc.log_text()
    finally:
        svc.stop()
        proxy.stop()
        server.close()
