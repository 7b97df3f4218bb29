"""The web console at `/console`: static assets shipped inside the package (no CDN, no external fonts), served
with a Content-Security-Policy that allows only this origin's script and style (no inline script), and the two
read-only admin endpoints only the console needs: fleet traffic per rule and the top denied values."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files

from aiohttp import web

from ratelimitd.api.domains_admin import Authorize, Handler, guarded
from ratelimitd.engine.fleet_stats import FleetStats

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


def add_console_routes(app: web.Application, stats: FleetStats, authorize: Authorize) -> None:
    root = files("ratelimitd").joinpath("console")
    assets = {name: (root.joinpath(name).read_bytes(), kind) for name, kind in ASSETS.items()}

    async def asset(request: web.Request) -> web.Response:
        found = assets.get(request.match_info.get("name", "index.html"))
        if found is None:
            raise web.HTTPNotFound()
        body, kind = found
        return web.Response(body=body, content_type=kind, charset="utf-8", headers=SECURITY_HEADERS)

    def reading(read: Callable[[], Awaitable[dict[str, object]]]) -> Handler:
        async def handle(request: web.Request, who: str) -> web.StreamResponse:
            return web.json_response(await read(), headers={"Cache-Control": "no-store"})

        return guarded(authorize, handle)

    app.router.add_get("/console", asset)
    app.router.add_get("/console/", asset)
    app.router.add_get("/console/{name}", asset)
    app.router.add_get("/v1/admin/stats", reading(stats.overview))
    app.router.add_get("/v1/admin/top-keys", reading(stats.top_keys))
