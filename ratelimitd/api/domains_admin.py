"""Stored limits over HTTP (`/v1/admin/domains...`) and gRPC (`ratelimitd.v1.Admin`): the faces of
`engine/stored_limits.py`, with HTTP's conditional requests (ETag, If-Match, If-None-Match) for versions.

A change needs a precondition (If-Match: the version read, or If-None-Match: * to create): without one 428,
a stale one 412, so two operators editing at once cannot overwrite each other unseen. Only the bearer token
in the Authorization header authorizes a call; browsers never attach it on their own, so a cross-site request
cannot make a change."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from aiohttp import web

from ratelimitd.engine.stored_limits import LimitsEditor, LimitsError, parse_precondition
from ratelimitd.store.interface import StoreUnavailable
from ratelimitd.v1 import ratelimitd_pb2 as pb

# LimitsError.kind -> (HTTP status, gRPC code)
STATUS = {
    "invalid": (400, grpc.StatusCode.INVALID_ARGUMENT),
    "precondition_required": (428, grpc.StatusCode.INVALID_ARGUMENT),
    "stale": (412, grpc.StatusCode.ABORTED),
    "exists": (412, grpc.StatusCode.ABORTED),
    "file_domain": (409, grpc.StatusCode.FAILED_PRECONDITION),
    "not_found": (404, grpc.StatusCode.NOT_FOUND),
}
MAX_BODY = 512 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Authorize = Callable[[web.Request], str | None]


def guarded(authorize: Authorize, action: Callable[[web.Request, str], Awaitable[web.StreamResponse]]) -> Handler:
    """An admin HTTP handler: 401 without a valid token, else `action(request, who)` with refusals mapped
    (LimitsError through STATUS, the store down to 503)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        who = authorize(request)
        if who is None:
            return web.json_response({"error": "admin calls need 'Authorization: Bearer <token>'"}, status=401)
        try:
            return await action(request, who)
        except LimitsError as err:
            return web.json_response({"error": str(err), "problems": err.problems}, status=STATUS[err.kind][0])
        except StoreUnavailable:
            return web.json_response({"error": "store unavailable"}, status=503)

    return handle


def add_domain_routes(app: web.Application, editor: LimitsEditor, authorize: Authorize) -> None:

    def precondition(request: web.Request) -> str:
        return parse_precondition(request.headers.get("If-Match"), request.headers.get("If-None-Match"))

    async def body_text(request: web.Request) -> str:
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise LimitsError("invalid", f"body larger than {MAX_BODY} bytes")
        data = await request.content.read(MAX_BODY + 1)
        if len(data) > MAX_BODY:
            raise LimitsError("invalid", f"body larger than {MAX_BODY} bytes")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise LimitsError("invalid", "the body must be UTF-8 YAML") from None

    async def listing(request: web.Request, who: str) -> web.StreamResponse:
        return web.json_response(editor.listing())

    async def get(request: web.Request, who: str) -> web.StreamResponse:
        d = await editor.get(request.match_info["domain"])
        return web.Response(
            text=d.yaml, content_type="application/yaml", headers={"ETag": d.etag, "X-Ratelimitd-Source": d.source}
        )

    async def put(request: web.Request, who: str) -> web.StreamResponse:
        domain = request.match_info["domain"]
        pre = precondition(request)
        version = await editor.put(domain, await body_text(request), pre, who)
        return web.json_response(
            {"domain": domain, "version": version}, status=201 if pre == "*" else 200, headers={"ETag": f'"{version}"'}
        )

    async def delete(request: web.Request, who: str) -> web.StreamResponse:
        domain = request.match_info["domain"]
        version = await editor.delete(domain, precondition(request), who)
        return web.json_response({"domain": domain, "deleted": True, "version": version})

    async def history(request: web.Request, who: str) -> web.StreamResponse:
        entries = await editor.history(request.match_info["domain"])
        return web.json_response({"entries": [e.as_json(with_yaml=True) for e in entries]})

    async def rollback(request: web.Request, who: str) -> web.StreamResponse:
        domain = request.match_info["domain"]
        pre = precondition(request)
        try:
            target = int((await request.json())["version"])
        except (ValueError, KeyError, TypeError):
            raise LimitsError("invalid", 'the body must be {"version": <a version from the history>}') from None
        version = await editor.rollback(domain, target, pre, who)
        return web.json_response({"domain": domain, "version": version}, headers={"ETag": f'"{version}"'})

    async def validate(request: web.Request, who: str) -> web.StreamResponse:
        found = editor.problems(request.match_info["domain"], await body_text(request))
        return web.json_response({"problems": [{"line": line, "message": message} for line, message in found]})

    async def restore(request: web.Request, who: str) -> web.StreamResponse:
        return web.json_response(await editor.restore(who))

    app.router.add_get("/v1/admin/domains", guarded(authorize, listing))
    app.router.add_post("/v1/admin/restore-domains", guarded(authorize, restore))
    app.router.add_get("/v1/admin/domains/{domain}", guarded(authorize, get))
    app.router.add_put("/v1/admin/domains/{domain}", guarded(authorize, put))
    app.router.add_delete("/v1/admin/domains/{domain}", guarded(authorize, delete))
    app.router.add_get("/v1/admin/domains/{domain}/history", guarded(authorize, history))
    app.router.add_post("/v1/admin/domains/{domain}/rollback", guarded(authorize, rollback))
    app.router.add_post("/v1/admin/domains/{domain}/validate", guarded(authorize, validate))


class DomainRpcs:
    """The gRPC calls; `AdminService` authorizes them and maps `LimitsError` through `STATUS`."""

    def __init__(self, editor: LimitsEditor) -> None:
        self.editor = editor

    async def list(self, request: pb.ListDomainsRequest, who: str) -> pb.ListDomainsResponse:
        listing = self.editor.listing()
        infos = [
            pb.DomainInfo(domain=d["domain"], source=d["source"], version=d["version"] or 0, rules=d["rules"])
            for d in listing["domains"]
        ]
        return pb.ListDomainsResponse(domains=infos, generation=listing["generation"], lost=listing["lost"])

    async def get(self, request: pb.GetDomainRequest, who: str) -> pb.GetDomainResponse:
        d = await self.editor.get(request.domain)
        return pb.GetDomainResponse(yaml=d.yaml, etag=d.etag, source=d.source)

    @staticmethod
    def _precondition(request: Any) -> str:
        return parse_precondition(request.if_match or None, "*" if getattr(request, "create", False) else None)

    async def put(self, request: pb.PutDomainRequest, who: str) -> pb.PutDomainResponse:
        version = await self.editor.put(request.domain, request.yaml, self._precondition(request), who)
        return pb.PutDomainResponse(version=version)

    async def delete(self, request: pb.PutDomainRequest, who: str) -> pb.PutDomainResponse:
        return pb.PutDomainResponse(version=await self.editor.delete(request.domain, self._precondition(request), who))

    async def history(self, request: pb.GetDomainRequest, who: str) -> pb.DomainHistoryResponse:
        entries = await self.editor.history(request.domain)
        return pb.DomainHistoryResponse(entries=[pb.HistoryEntry(**e.as_json(with_yaml=True)) for e in entries])

    async def restore(self, request: pb.RestoreDomainsRequest, who: str) -> pb.RestoreDomainsResponse:
        return pb.RestoreDomainsResponse(**await self.editor.restore(who))

    async def rollback(self, request: pb.RollbackDomainRequest, who: str) -> pb.PutDomainResponse:
        version = await self.editor.rollback(request.domain, request.version, self._precondition(request), who)
        return pb.PutDomainResponse(version=version)
