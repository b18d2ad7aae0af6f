"""The dials page at ``/``: static files shipped in the package (no CDN, no build step, no framework).

The page is public like any static file; everything it shows comes from the API with the key it asks for.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from .errors import ApiError

STATIC = Path(__file__).parent / "static"
FILES = {"index.html": "text/html", "dials.js": "text/javascript", "chat.js": "text/javascript",
         "markdown.js": "text/javascript", "markdown-inline.js": "text/javascript", "policy-file.js": "text/javascript",
         "dials.css": "text/css"}
# Nothing but this server: no inline script, no third-party origin, not framed by other sites.
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
           "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"}


def routes() -> list[Route]:
    async def page(request: Request) -> Response:
        return static(request.path_params.get("name", "index.html"))

    return [Route("/", page), Route("/ui/{name}", page)]


def static(name: str) -> Response:
    if name not in FILES:  # a fixed list: no path from the URL ever reaches the file system
        raise ApiError(404, f"no file {name!r} on this page", code="not_found")
    return FileResponse(STATIC / name, media_type=FILES[name], headers=HEADERS)
