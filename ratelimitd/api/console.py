"""The web console at `/console`: static assets shipped inside the package (no CDN, no external fonts), served
with a Content-Security-Policy that allows only this origin's script and style (no inline script), and the two
read-only admin endpoints only the console needs: fleet traffic per rule and the top denied values."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files

from aiohttp import web

from ratelimitd.engine.fleet_stats import FleetStats
from ratelimitd.store.interface import StoreUnavailable

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
ASSETS = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css"}

Authorize = Callable[[web.Request], str | None]


def add_console_routes(app: web.Application, stats: FleetStats, authorize: Authorize) -> None:
    root = files("ratelimitd").joinpath("console")
    assets = {name: (root.joinpath(name).read_bytes(), kind) for name, kind in ASSETS.items()}

    async def asset(request: web.Request) -> web.Response:
        found = assets.get(request.match_info.get("name", "index.html"))
        if found is None:
            raise web.HTTPNotFound()
        body, kind = found
        return web.Response(body=body, content_type=kind, charset="utf-8", headers=SECURITY_HEADERS)

    def guarded(read: Callable[[], Awaitable[dict[str, object]]]) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            if authorize(request) is None:
                return web.json_response({"error": "admin calls need 'Authorization: Bearer <token>'"}, status=401)
            try:
                return web.json_response(await read(), headers={"Cache-Control": "no-store"})
            except StoreUnavailable:
                return web.json_response({"error": "store unavailable"}, status=503)

        return handle

    app.router.add_get("/console", asset)
    app.router.add_get("/console/", asset)
    app.router.add_get("/console/{name}", asset)
    app.router.add_get("/v1/admin/stats", guarded(stats.overview))
    app.router.add_get("/v1/admin/top-keys", guarded(stats.top_keys))
