"""The HTTP/JSON face, forward-auth, the native gRPC API and the Python client, through a real process.
All faces share one decision core: the same requests get the same answers on each."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ratelimitd.client import AsyncClient, Client
from ratelimitd.store.embedded import EmbeddedRedis
from ratelimitd.v1 import ratelimitd_pb2 as pb
from tests.service import RLS, ServiceProcess, descriptor

CONFIG = """
domain: web
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 3, name: per-user}
  - key: ip
    rate_limit: {unit: hour, requests_per_unit: 2, name: per-ip, algorithm: sliding_log}
  - key: path
    value: /api/*
    rate_limit: {unit: minute, requests_per_unit: 100, name: api-route}
  - key: api_key
    rate_limit: {unit: minute, requests_per_unit: 10, burst: 2, algorithm: token_bucket, name: per-key}
http_descriptors:
  - entries: [{key: ip, source: client_ip}]
  - entries: [{key: api_key, header: X-API-Key}]
  - entries: [{key: path, source: path}]
"""


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, default_redis: EmbeddedRedis) -> Iterator[ServiceProcess]:
    d = tmp_path_factory.mktemp("web")
    (d / "web.yaml").write_text(CONFIG)
    svc = ServiceProcess(d, default_redis.url).start()
    yield svc
    svc.stop()


def http(
    svc: ServiceProcess, method: str, path: str, body: object = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], dict[str, Any]]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(
        f"http://127.0.0.1:{svc.http_port}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read() or b"{}")


def check_body(user: str, cost: int | None = None, dry_run: bool = False) -> dict[str, object]:
    d: dict[str, object] = {"entries": [{"key": "user", "value": user}]}
    if cost is not None:
        d["cost"] = cost
    return {"domain": "web", "descriptors": [d], "dry_run": dry_run}


def test_http_check_200_then_429_with_headers(service: ServiceProcess) -> None:
    user = uuid.uuid4().hex
    status, headers, body = http(service, "POST", "/v1/check", check_body(user))
    assert status == 200 and body["overall_code"] == "OK"
    assert headers["RateLimit-Policy"] == '"per-user";q=3;w=60'
    assert headers["RateLimit"].startswith('"per-user";r=2;t=')
    http(service, "POST", "/v1/check", check_body(user, cost=2))
    status, headers, body = http(service, "POST", "/v1/check", check_body(user))
    assert status == 429 and body["overall_code"] == "OVER_LIMIT"
    assert 0 < int(headers["Retry-After"]) <= 60
    assert body["descriptors"][0]["rule"] == "per-user" and body["descriptors"][0]["remaining"] == 0


def test_http_dry_run_consumes_nothing(service: ServiceProcess) -> None:
    user = uuid.uuid4().hex
    for _ in range(5):
        status, _, body = http(service, "POST", "/v1/check", check_body(user, dry_run=True))
        assert status == 200 and body["descriptors"][0]["remaining"] == 2
    status, _, body = http(service, "POST", "/v1/check", check_body(user, cost=4, dry_run=True))
    assert status == 429 and body["retry_after_ms"] is None  # never fits


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "Invalid JSON"),
        ({"descriptors": []}, "domain: Field required"),
        ({"domain": "web", "descriptors": [{"entries": [{"key": "user"}]}]}, "descriptors[0].entries[0].value"),
        ({"domain": "web", "descriptors": [{"entries": []}]}, "descriptors[0] has no entries"),
        ({"domain": "web", "descriptors": [], "hits": -1}, "hits: Input should be greater than or equal to 0"),
        ({"domain": "web", "descriptors": [], "bogus": 1}, "bogus: Extra inputs are not permitted"),
        ({"domain": "", "descriptors": [{"entries": [{"key": "a", "value": "b"}]}]}, "domain must not be empty"),
    ],
)
def test_http_bad_requests_get_400_naming_the_field(service: ServiceProcess, body: object, message: str) -> None:
    status, _, answer = http(service, "POST", "/v1/check", body)
    assert status == 400 and message in str(answer["error"])


def test_forward_auth(service: ServiceProcess) -> None:
    ip = f"10.9.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    headers = {
        "X-Forwarded-For": f"{ip}, 127.0.0.1",
        "X-Forwarded-Uri": "/api/orders?x=1",
        "X-Forwarded-Method": "POST",
    }
    answers = [http(service, "GET", "/v1/forward-auth/web", headers=headers) for _ in range(3)]
    assert [a[0] for a in answers] == [200, 200, 429]  # per-ip 2/hour
    status, resp_headers, body = answers[-1]
    assert status == 429 and "Retry-After" in resp_headers
    assert [d.get("rule") for d in body["descriptors"]] == ["per-ip", "api-route"]
    assert http(service, "GET", "/v1/forward-auth/nope")[0] == 404


def test_forward_auth_header_descriptor_is_skipped_when_absent(service: ServiceProcess) -> None:
    key = uuid.uuid4().hex
    base = {"X-Forwarded-For": f"10.8.{uuid.uuid4().int % 250}.1", "X-Forwarded-Uri": "/other"}
    _, _, body = http(service, "GET", "/v1/forward-auth/web", headers=base)
    assert [d.get("rule") for d in body["descriptors"]] == ["per-ip", None]
    _, _, body = http(service, "GET", "/v1/forward-auth/web", headers={**base, "X-API-Key": key})
    assert [d.get("rule") for d in body["descriptors"]] == ["per-ip", "per-key", None]


def test_native_api_and_sync_client(service: ServiceProcess) -> None:
    client = Client(service.target)
    try:
        user = uuid.uuid4().hex
        first = client.check("web", {"user": user}, cost=2)
        assert first.allowed and first.decisions[0].remaining == 1 and first.decisions[0].rule_name == "per-user"
        assert first.decisions[0].algorithm == "fixed_window" and first.decisions[0].limited
        peek = client.check("web", {"user": user}, cost=1, dry_run=True)
        assert peek.allowed and peek.decisions[0].remaining == 0
        denied = client.check("web", {"user": user}, cost=2)
        assert not denied.allowed and denied.retry_after is not None and 0 < denied.retry_after <= 60
        assert denied.response.overall_code == pb.OVER_LIMIT
        none = client.check("web", {"nothing": "x"})
        assert none.allowed and not none.decisions[0].limited
    finally:
        client.close()


async def test_async_client(service: ServiceProcess) -> None:
    client = AsyncClient(service.target)
    try:
        key = uuid.uuid4().hex
        results = [await client.check("web", {"api_key": key}) for _ in range(3)]
        assert [r.allowed for r in results] == [True, True, False]
        assert results[-1].retry_after is not None and results[-1].retry_after <= 6.0
    finally:
        await client.close()


def test_native_invalid_argument(service: ServiceProcess) -> None:
    import grpc

    client = Client(service.target)
    try:
        with pytest.raises(grpc.RpcError) as err:
            client.check("web", [])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        client.close()


def test_three_faces_give_the_same_decisions(service: ServiceProcess) -> None:
    costs = [1, 2, 1, 1, 0]

    def via_envoy(user: str) -> list[tuple[str, int]]:
        out = []
        for c in costs:
            st = service.check("web", descriptor([("user", user)], hits=c)).statuses[0]
            out.append((RLS.Code.Name(st.code), st.limit_remaining))
        return out

    def via_native(user: str) -> list[tuple[str, int]]:
        client = Client(service.target)
        try:
            return [_native(client, user, c) for c in costs]
        finally:
            client.close()

    def via_http(user: str) -> list[tuple[str, int]]:
        out = []
        for c in costs:
            _, _, body = http(service, "POST", "/v1/check", check_body(user, cost=c))
            d = body["descriptors"][0]
            out.append((d["code"], d["remaining"]))
        return out

    results = [face(uuid.uuid4().hex) for face in (via_envoy, via_native, via_http)]
    assert results[0] == results[1] == results[2]
    assert results[0] == [("OK", 2), ("OK", 0), ("OVER_LIMIT", 0), ("OVER_LIMIT", 0), ("OVER_LIMIT", 0)]


def _native(client: Client, user: str, cost: int) -> tuple[str, int]:
    req = pb.CheckRequest(
        domain="web", descriptors=[pb.Descriptor(entries=[pb.Entry(key="user", value=user)], cost=cost)]
    )
    resp = client._stub.Check(req, timeout=5)
    d = resp.decisions[0]
    return pb.Code.Name(d.code), d.remaining
