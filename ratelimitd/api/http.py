"""The HTTP listener: health for load balancers (more faces join it later)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web


def make_app(is_healthy: Callable[[], bool]) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        if is_healthy():
            return web.Response(text="OK")
        return web.Response(status=503, text="NOT SERVING")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/healthcheck", healthz)  # envoyproxy/ratelimit's path
    return app
