"""Limits kept in the store and edited through the admin API, against two real service processes on one real
Redis: what one instance accepts, the other enforces within a second; conflicting, invalid and file-domain
edits change nothing; history and rollback; a store that loses the limits does not make them vanish."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis

from ratelimitd.store.embedded import EmbeddedRedis, free_port
from ratelimitd.v1 import ratelimitd_pb2 as pb
from ratelimitd.v1 import ratelimitd_pb2_grpc as pb_grpc
from tests.service import RLS, ServiceProcess

TOKEN = "alice-" + uuid.uuid4().hex
FILE_DOMAIN = "domain: from_files\ndescriptors:\n  - key: k\n    rate_limit: {unit: minute, requests_per_unit: 5}\n"


def live(limit: int, domain: str = "live") -> str:
    return (
        f"domain: {domain}\ndescriptors:\n  - key: user\n    rate_limit: {{unit: minute, requests_per_unit: {limit}}}\n"
    )


class Api:
    """The HTTP admin API of one instance."""

    def __init__(self, svc: ServiceProcess, token: str = TOKEN) -> None:
        self.base = f"http://127.0.0.1:{svc.http_port}/v1/admin"
        self.token = token

    def call(
        self, method: str, path: str, body: str | bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        data = body.encode() if isinstance(body, str) else body
        hdrs = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, h, raw = r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as err:
            status, h, raw = err.code, dict(err.headers), err.read()
        text = raw.decode()
        return status, h, json.loads(text) if h.get("Content-Type", "").startswith("application/json") else text


@pytest.fixture
def store() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis().start()
    yield server
    server.close()


@pytest.fixture
def pair(tmp_path: Path, store: EmbeddedRedis) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    (tmp_path / "files.yaml").write_text(FILE_DOMAIN)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice:{TOKEN}\nbob:bob-{uuid.uuid4().hex}\n")
    args = ("--admin-token-file", str(tokens))
    with (
        ServiceProcess(tmp_path, store.url, *args).start() as a,
        ServiceProcess(tmp_path, store.url, *args).start() as b,
    ):
        yield a, b


def enforced_limit(svc: ServiceProcess, domain: str = "live") -> int | None:
    """The limit `svc` applies to a fresh user of `domain` (None: no rule)."""
    status = svc.check(domain, [("user", uuid.uuid4().hex)]).statuses[0]
    return status.current_limit.requests_per_unit if status.HasField("current_limit") else None


def wait_for_limit(svc: ServiceProcess, expected: int | None, within: float = 1.0) -> float:
    started = time.monotonic()
    while enforced_limit(svc) != expected:
        assert time.monotonic() - started < within, f"not {expected} within {within} s: {enforced_limit(svc)}"
        time.sleep(0.02)
    return time.monotonic() - started


def test_an_edit_through_one_instance_is_enforced_by_the_other_within_a_second(
    pair: tuple[ServiceProcess, ServiceProcess],
) -> None:
    a, b = pair
    api = Api(a)
    assert enforced_limit(b) is None
    status, headers, body = api.call("PUT", "/domains/live", live(2), {"If-None-Match": "*"})
    assert (status, body["version"]) == (201, 1) and headers["ETag"] == '"1"'
    wait_for_limit(b, 2)
    user = uuid.uuid4().hex
    codes = [b.check("live", [("user", user)]).overall_code for _ in range(3)]
    assert codes == [RLS.OK, RLS.OK, RLS.OVER_LIMIT]
    status, _, body = api.call("PUT", "/domains/live", live(7), {"If-Match": '"1"'})
    assert (status, body["version"]) == (200, 2)
    wait_for_limit(b, 7)
    status, headers, text = Api(b).call("GET", "/domains/live")
    assert (status, headers["ETag"], text) == (200, '"2"', live(7))
    status, _, listing = Api(b).call("GET", "/domains")
    assert {"domain": "live", "source": "store", "version": 2, "rules": 1} in listing["domains"]
    assert {"domain": "from_files", "source": "file", "version": None, "rules": 1} in listing["domains"]
    assert listing["lost"] is False
    status, _, _ = api.call("DELETE", "/domains/live", headers={"If-Match": '"2"'})
    assert status == 200
    wait_for_limit(b, None)


def test_concurrent_edits_of_one_version_one_wins_the_other_gets_412(
    pair: tuple[ServiceProcess, ServiceProcess],
) -> None:
    a, b = pair
    assert Api(a).call("PUT", "/domains/live", live(2), {"If-None-Match": "*"})[0] == 201
    results: list[int] = []

    def edit(svc: ServiceProcess, limit: int) -> None:
        results.append(Api(svc).call("PUT", "/domains/live", live(limit), {"If-Match": '"1"'})[0])

    threads = [threading.Thread(target=edit, args=(svc, n)) for svc, n in ((a, 10), (b, 20))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200, 412]
    winner = 10 if Api(a).call("GET", "/domains/live")[2] == live(10) else 20
    wait_for_limit(a, winner)
    wait_for_limit(b, winner)
    assert Api(a).call("PUT", "/domains/live", live(3), {"If-None-Match": "*"})[0] == 412  # exists


def test_refused_edits_change_nothing(pair: tuple[ServiceProcess, ServiceProcess]) -> None:
    a, b = pair
    api = Api(a)
    assert api.call("PUT", "/domains/live", live(2), {"If-None-Match": "*"})[0] == 201
    bad = (
        "domain: live\ndescriptors:\n  - key: user\n    rate_limit: {unit: minute, requests_per_unit: -1}\n"
        "  - key: ip\n    colour: red\n"
    )
    status, _, body = api.call("PUT", "/domains/live", bad, {"If-Match": '"1"'})
    assert status == 400
    assert body["problems"] == [  # every problem, each as `domain: path: reason`
        "live: descriptors[0].rate_limit.requests_per_unit: Input should be greater than or equal to 0",
        "live: descriptors[1].colour: unknown key 'colour'",
    ]
    assert api.call("PUT", "/domains/live", "domain: other\ndescriptors: []\n", {"If-Match": '"1"'})[2]["problems"] == [
        "live: domain: must be 'live' (the domain in the path), not 'other'"
    ]
    assert api.call("PUT", "/domains/live", "{[", {"If-Match": '"1"'})[0] == 400
    assert api.call("PUT", "/domains/live", live(5))[0] == 428  # no precondition
    assert api.call("PUT", "/domains/live", live(5), {"If-Match": '"7"'})[0] == 412  # stale
    assert api.call("DELETE", "/domains/live")[0] == 428
    status, _, body = api.call("PUT", "/domains/from_files", FILE_DOMAIN, {"If-Match": '"1"'})
    assert status == 409 and "config files" in body["error"]
    assert api.call("DELETE", "/domains/from_files", headers={"If-Match": '"1"'})[0] == 409
    assert Api(a, "wrong").call("PUT", "/domains/live", live(5), {"If-Match": '"1"'})[0] == 401
    assert api.call("GET", "/domains/live")[1]["ETag"] == '"1"'
    assert enforced_limit(a) == 2
    wait_for_limit(b, 2)
    assert len(api.call("GET", "/domains/live/history")[2]["entries"]) == 1


def test_history_records_who_and_what_and_rollback_makes_a_new_version(
    pair: tuple[ServiceProcess, ServiceProcess],
) -> None:
    a, b = pair
    api = Api(a)
    api.call("PUT", "/domains/live", live(2), {"If-None-Match": "*"})
    api.call("PUT", "/domains/live", live(9), {"If-Match": '"1"'})
    entries = api.call("GET", "/domains/live/history")[2]["entries"]
    assert [(e["version"], e["who"], e["action"]) for e in entries] == [(2, "alice", "update"), (1, "alice", "create")]
    assert entries[0]["summary"] == ("~ live.user: 2 per minute, fixed_window -> live.user: 9 per minute, fixed_window")
    assert entries[1]["summary"] == "+ live.user: 2 per minute, fixed_window"
    assert api.call("POST", "/domains/live/rollback", json.dumps({"version": 1}), {"If-Match": '"1"'})[0] == 412
    status, _, body = api.call("POST", "/domains/live/rollback", json.dumps({"version": 1}), {"If-Match": '"2"'})
    assert (status, body["version"]) == (200, 3)
    wait_for_limit(b, 2)
    latest = api.call("GET", "/domains/live/history")[2]["entries"][0]
    assert (latest["version"], latest["action"], latest["yaml"]) == (3, "rollback to 1", live(2))
    status, _, body = api.call("POST", "/domains/live/rollback", json.dumps({"version": 99}), {"If-Match": '"3"'})
    assert status == 404


def test_a_store_that_loses_the_limits_does_not_drop_them(
    pair: tuple[ServiceProcess, ServiceProcess], store: EmbeddedRedis
) -> None:
    a, b = pair
    Api(a).call("PUT", "/domains/live", live(2), {"If-None-Match": "*"})
    wait_for_limit(b, 2)
    redis.Redis.from_url(store.url).flushall()
    deadline = time.monotonic() + 3
    while not Api(b).call("GET", "/domains")[2]["lost"]:
        assert time.monotonic() < deadline, "the loss was not reported"
        time.sleep(0.05)
    assert enforced_limit(a) == 2 and enforced_limit(b) == 2
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{b.http_port}/metrics", timeout=5).read().decode()
    assert "ratelimitd_stored_limits_lost 1.0" in metrics
    assert "the store has lost stored limits" in b.log_text()
    status, _, body = Api(b).call("POST", "/restore-domains")
    assert status == 200 and body["restored"] == ["live"]
    for svc in (a, b):
        deadline = time.monotonic() + 2
        while Api(svc).call("GET", "/domains")[2]["lost"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert enforced_limit(a) == 2 and Api(a).call("GET", "/domains/live")[0] == 200


def test_the_grpc_admin_calls(pair: tuple[ServiceProcess, ServiceProcess]) -> None:
    a, b = pair
    stub = pb_grpc.AdminStub(grpc.insecure_channel(a.target))
    auth = (("authorization", f"Bearer {TOKEN}"),)
    put = stub.PutDomain(pb.PutDomainRequest(domain="live", yaml=live(4), create=True), metadata=auth, timeout=5)
    assert put.version == 1
    wait_for_limit(b, 4)
    got = stub.GetDomain(pb.GetDomainRequest(domain="live"), metadata=auth, timeout=5)
    assert (got.yaml, got.etag, got.source) == (live(4), '"1"', "store")
    with pytest.raises(grpc.RpcError) as err:
        stub.PutDomain(pb.PutDomainRequest(domain="live", yaml=live(5), if_match="9"), metadata=auth, timeout=5)
    assert err.value.code() == grpc.StatusCode.ABORTED
    with pytest.raises(grpc.RpcError) as err:
        stub.PutDomain(pb.PutDomainRequest(domain="live", yaml="domain: live\n"), metadata=auth, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        stub.DeleteDomain(pb.PutDomainRequest(domain="from_files", if_match="1"), metadata=auth, timeout=5)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as err:
        stub.ListDomains(pb.ListDomainsRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    listing = stub.ListDomains(pb.ListDomainsRequest(), metadata=auth, timeout=5)
    assert {(d.domain, d.source, d.version) for d in listing.domains} == {
        ("live", "store", 1),
        ("from_files", "file", 0),
    }
    stub.PutDomain(pb.PutDomainRequest(domain="live", yaml=live(6), if_match="1"), metadata=auth, timeout=5)
    history = stub.DomainHistory(pb.GetDomainRequest(domain="live"), metadata=auth, timeout=5)
    assert [e.version for e in history.entries] == [2, 1]
    back = stub.RollbackDomain(pb.RollbackDomainRequest(domain="live", version=1, if_match="2"), metadata=auth)
    assert back.version == 3
    assert stub.DeleteDomain(pb.PutDomainRequest(domain="live", if_match="3"), metadata=auth).version == 4
    wait_for_limit(b, None)
    restored = stub.RestoreDomains(pb.RestoreDomainsRequest(), metadata=auth, timeout=5)
    assert (list(restored.restored), restored.generation) == ([], 5)  # nothing lost: nothing written back


def test_config_export_and_import(tmp_path: Path, store: EmbeddedRedis) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "ratelimitd", "config", *args, "--redis-url", store.url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.yaml").write_text(live(2, "alpha"))
    (src / "b.yaml").write_text(live(3, "beta"))
    done = cli("import", str(src))
    assert done.returncode == 0, done.stderr
    assert "alpha: created as version 1" in done.stdout and "beta: created as version 2" in done.stdout
    assert "alpha: unchanged (version 1)" in cli("import", str(src)).stdout
    (src / "a.yaml").write_text(live(20, "alpha"))
    refused = cli("import", str(src))
    assert refused.returncode == 3 and "--update replaces it" in refused.stdout
    assert cli("import", str(src), "--update", "--who", "ci").returncode == 0
    out = tmp_path / "out"
    exported = cli("export", str(out))
    assert exported.returncode == 0, exported.stderr
    assert (out / "alpha.yaml").read_text() == live(20, "alpha") and (out / "beta.yaml").read_text() == live(3, "beta")
    (src / "bad.yaml").write_text("domain: gamma\ndescriptors:\n  - key: x\n    rate_limit: {unit: eon}\n")
    invalid = cli("import", str(src))
    assert invalid.returncode == 1 and "bad.yaml: descriptors[0].rate_limit" in invalid.stderr


def test_the_http_admin_api_and_console_can_have_a_listener_of_their_own(tmp_path: Path, store: EmbeddedRedis) -> None:
    (tmp_path / "files.yaml").write_text(FILE_DOMAIN)
    port = free_port()
    args = ("--admin-token", TOKEN, "--admin-http-listen", f"127.0.0.1:{port}")
    with ServiceProcess(tmp_path, store.url, *args).start() as svc:

        def get(p: int, path: str) -> tuple[int, dict[str, str]]:
            req = urllib.request.Request(f"http://127.0.0.1:{p}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.status, dict(r.headers)
            except urllib.error.HTTPError as err:
                return err.code, dict(err.headers)

        status, headers = get(port, "/console")
        assert status == 200 and "script-src 'self'" in headers["Content-Security-Policy"]
        assert get(port, "/v1/admin/domains")[0] == 200
        assert get(svc.http_port, "/console")[0] == 404
        assert get(svc.http_port, "/v1/admin/domains")[0] == 404
        assert get(svc.http_port, "/healthz")[0] == 200
