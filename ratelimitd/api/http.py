"""The HTTP listener: health, `POST /v1/check` (JSON) and `GET /v1/forward-auth/{domain}` for gateways
that do not speak gRPC (Traefik ForwardAuth, Caddy forward_auth, NGINX auth_request, custom code)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ratelimitd.config.models import HttpDescriptorModel
from ratelimitd.engine.decision import Code, Decision, Status, ceil_div
from ratelimitd.engine.engine import Engine
from ratelimitd.engine.request import MAX_COST, Descriptor, InvalidRequest, Request

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EntryBody(_Body):
    key: str
    value: str


class DescriptorBody(_Body):
    entries: list[EntryBody]
    cost: int | None = Field(default=None, ge=0, le=MAX_COST)


class CheckBody(_Body):
    domain: str
    descriptors: list[DescriptorBody]
    hits: int = Field(default=0, ge=0, le=MAX_COST)
    dry_run: bool = False


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


def _error_text(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".") or "(body)"
        parts.append(f"{path}: {e['msg']}")
    return "; ".join(parts)


def status_json(s: Status) -> dict[str, object]:
    out: dict[str, object] = {"code": s.code.name}
    if s.rule is not None:
        out.update(
            rule=s.rule.name or s.rule.stats_key,
            algorithm=s.rule.algorithm,
            limit=s.rule.requests_per_unit,
            remaining=s.remaining,
            reset_after_ms=ceil_div(s.reset_after_us, 1000),
            retry_after_ms=None if s.retry_after_us < 0 else ceil_div(s.retry_after_us, 1000),
            shadow_denied=s.shadow_denied,
        )
    return out


def decision_response(decision: Decision, deny_status: int = 429) -> web.Response:
    """200 when allowed, 429 (or `deny_status`) when not; IETF RateLimit/RateLimit-Policy and Retry-After."""
    body: dict[str, object] = {
        "overall_code": decision.code.name,
        "descriptors": [status_json(s) for s in decision.statuses],
        "failure_mode": decision.store_failed,
    }
    headers: dict[str, str] = {}
    s = decision.closest_to_limit()
    if s is not None and (rule := s.rule) is not None:
        name = (rule.name or rule.stats_key).replace('"', "")
        headers["RateLimit-Policy"] = f'"{name}";q={rule.requests_per_unit};w={rule.window_seconds}'
        headers["RateLimit"] = f'"{name}";r={s.remaining};t={ceil_div(s.reset_after_us, 1_000_000)}'
    status = 200
    if decision.code is Code.OVER_LIMIT:
        status = deny_status
        retry = decision.retry_after_us
        body["retry_after_ms"] = None if retry < 0 else ceil_div(retry, 1000)
        if retry >= 0:
            headers["Retry-After"] = str(ceil_div(retry, 1_000_000))
    return web.Response(status=status, text=json.dumps(body), content_type="application/json", headers=headers)


def client_ip(request: web.Request) -> str:
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded:
        return forwarded.split(",")[0].strip()
    return request.headers.get("X-Real-IP") or request.remote or ""


def _path(request: web.Request) -> str:
    uri = request.headers.get("X-Forwarded-Uri") or request.headers.get("X-Original-URI") or request.path
    return uri.split("?", 1)[0]


SOURCES: dict[str, Callable[[web.Request], str]] = {
    "client_ip": client_ip,
    "method": lambda r: r.headers.get("X-Forwarded-Method") or r.headers.get("X-Original-Method") or r.method,
    "path": _path,
    "host": lambda r: r.headers.get("X-Forwarded-Host") or r.host,
}


def build_descriptors(specs: tuple[HttpDescriptorModel, ...], request: web.Request) -> tuple[Descriptor, ...]:
    """A descriptor whose header is absent is skipped (as Envoy's request_headers action does)."""
    out = []
    for spec in specs:
        entries = []
        for e in spec.entries:
            if e.source is not None:
                value: str | None = SOURCES[e.source](request)
            elif e.header is not None:
                value = request.headers.get(e.header)
            else:
                value = e.value
            if value is None:
                break
            entries.append((e.key, value))
        else:
            out.append(Descriptor(tuple(entries)))
    return tuple(out)


def make_app(engine: Engine, is_healthy: Callable[[], bool], max_body: int = MAX_BODY) -> web.Application:
    latency = engine.metrics.histogram(engine.metrics.request_latency, "http")
    invalid = engine.metrics.invalid_requests.labels("http")

    async def healthz(_: web.Request) -> web.Response:
        if is_healthy():
            return web.Response(text="OK")
        return web.Response(status=503, text="NOT SERVING")

    async def check(request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            raw = await request.read()
            body = CheckBody.model_validate_json(raw)
        except ValidationError as err:
            invalid.inc()
            return _bad_request(_error_text(err))
        descriptors = tuple(Descriptor(tuple((e.key, e.value) for e in d.entries), d.cost) for d in body.descriptors)
        try:
            decision = await engine.check(Request(body.domain, descriptors, body.hits, body.dry_run))
        except InvalidRequest as err:
            invalid.inc()
            return _bad_request(str(err))
        latency.observe(time.perf_counter() - started)
        return decision_response(decision)

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(engine.metrics.exposition_registry())
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def forward_auth(request: web.Request) -> web.Response:
        name = request.match_info["domain"]
        deny_status = request.query.get("deny_status", "429")
        if deny_status not in ("401", "403", "429"):
            return _bad_request("deny_status must be 401, 403 or 429")
        domain = engine.config.current.domains.get(name)
        if domain is None:
            return web.json_response({"error": f"unknown domain '{name}'"}, status=404)
        descriptors = build_descriptors(domain.http_descriptors, request)
        if not descriptors:
            return web.json_response({"overall_code": "OK", "descriptors": []})
        try:
            decision = await engine.check(Request(name, descriptors))
        except InvalidRequest as err:
            return _bad_request(str(err))
        # NGINX auth_request passes only 401/403 through, so it asks for ?deny_status=403 and maps it to 429.
        return decision_response(decision, int(deny_status))

    app = web.Application(client_max_size=max_body)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/healthcheck", healthz)  # envoyproxy/ratelimit's path
    app.router.add_post("/v1/check", check)
    app.router.add_get("/metrics", metrics)
    app.router.add_route("*", "/v1/forward-auth/{domain}", forward_auth)
    return app
