"""Generated edits of stored limits: no crash, never a 5xx, and a refused edit writes nothing at all."""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from hypothesis import event, given, settings
from hypothesis import strategies as st

from ratelimitd.store.embedded import EmbeddedRedis
from tests.conftest import DEEP
from tests.integration.test_stored_limits import Api, live
from tests.service import ServiceProcess

pytestmark = pytest.mark.slow
TOKEN = "fuzz-" + uuid.uuid4().hex
PREFIX = f"fz{uuid.uuid4().hex[:8]}:"
REFUSED = {400, 404, 405, 409, 412, 428}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, default_redis: EmbeddedRedis) -> Iterator[ServiceProcess]:
    d: Path = tmp_path_factory.mktemp("limits-fuzz")
    (d / "files.yaml").write_text("domain: from_files\ndescriptors: []\n")
    args = ("--admin-token", TOKEN, "--key-prefix", PREFIX)
    with ServiceProcess(d, default_redis.url, *args).start() as svc:
        assert Api(svc, TOKEN).call("PUT", "/domains/live", live(5), {"If-None-Match": "*"})[0] == 201
        yield svc
        assert svc.proc is not None and svc.proc.poll() is None, "the service died"
        assert "Traceback" not in svc.log_text()


scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=30), st.floats())
keys = st.sampled_from(
    [
        "domain",
        "descriptors",
        "key",
        "value",
        "rate_limit",
        "unit",
        "requests_per_unit",
        "algorithm",
        "burst",
        "shadow_mode",
        "replaces",
        "name",
        "unlimited",
        "x",
    ]
)
trees = st.recursive(
    scalars, lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(keys, kids, max_size=5)), max_leaves=25
)


def body_strategy() -> st.SearchStrategy[bytes]:
    as_yaml = trees.map(lambda t: yaml.safe_dump({"domain": "live", "descriptors": t}).encode())
    mutated = st.tuples(st.integers(0, 80), st.binary(max_size=8)).map(lambda cut: live(5)[: cut[0]].encode() + cut[1])
    return st.one_of(as_yaml, mutated, st.binary(max_size=300), trees.map(lambda t: yaml.safe_dump(t).encode()))


header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20)


@settings(max_examples=5_000 if DEEP else 150, deadline=None)
@given(
    method=st.sampled_from(["PUT", "PUT", "PUT", "DELETE", "POST", "VALIDATE"]),
    domain=st.one_of(st.just("live"), st.just("live"), st.just("from_files"), st.text(max_size=40)),
    body=body_strategy(),
    precondition=st.sampled_from(["none", "create", "current", "current", "random"]),
    noise=header_text,
)
def test_generated_edits(
    service: ServiceProcess, method: str, domain: str, body: bytes, precondition: str, noise: str
) -> None:
    api = Api(service, TOKEN)
    store = redis.Redis.from_url(service.args[service.args.index("--redis-url") + 1])
    before = store.get(f"{PREFIX}{{limits}}:generation")
    path = "/domains/" + urllib.parse.quote(domain, safe="")
    headers = {
        "none": {},
        "create": {"If-None-Match": "*"},
        "current": {"If-Match": api.call("GET", "/domains/live")[1].get("ETag", '"0"')},
        "random": {"If-Match": noise},
    }[precondition]
    if method == "POST":
        path += "/rollback"
    if method == "VALIDATE":
        method, path = "POST", path + "/validate"
    status, _, answer = api.call(method, path, body, headers)
    event(f"status {status}")
    assert status < 500, (method, domain, body, headers)
    if path.endswith("/validate") and status == 200:  # problems with their lines, and never a write
        assert all(set(p) == {"line", "message"} for p in answer["problems"])
        assert store.get(f"{PREFIX}{{limits}}:generation") == before
    elif status in REFUSED:
        assert store.get(f"{PREFIX}{{limits}}:generation") == before, "a refused edit wrote something"
    else:
        assert status in (200, 201)
        if method == "DELETE" and domain == "live":  # keep a domain to edit
            assert api.call("PUT", "/domains/live", live(5), {"If-None-Match": "*"})[0] == 201
