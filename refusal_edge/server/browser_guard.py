"""Which requests the server does any work for, decided before routing: no web page can drive it.

A browser lets any page send a "simple" cross-origin POST (``mode: "no-cors"``, ``Content-Type: text/plain``) and
lets a page whose DNS name is rebound to 127.0.0.1 read answers. Three checks, as Ollama's OLLAMA_ORIGINS does:

- ``Origin``: browsers send it on every cross-origin request and every POST. Absent (curl, SDKs) or this server's
  own origin (the dials page) is allowed; any other is refused (403) unless the user allows it (``--allowed-origin``,
  ``$REFUSAL_EDGE_ORIGINS``); an allowed origin also gets the CORS headers it needs to read answers.
- ``Host``: a loopback name (localhost, 127.0.0.1, [::1]), the address the connection arrived on, or a name the
  user allows (``--allowed-host``, ``*`` for any), with this server's port. A rebound name (evil.example) is refused
  (403). Bound to 0.0.0.0 the server accepts its own IP addresses as they are dialled; a DNS name needs
  ``--allowed-host``.
- ``Content-Type`` on a POST from a browser (one that sends ``Origin`` or ``Sec-Fetch-*``, as every current browser
  does on a POST): JSON (``application/json`` or ``…+json``), else 415. text/plain, form bodies and bodies with no
  type are what a page can send without a CORS preflight. A client that is no browser may send any type, as
  Ollama's documented ``curl … -d '{…}'`` does (curl says form-urlencoded): its body must still parse as JSON (400).

Refusals use the API's own error shape: Ollama's ``{"error": "..."}`` under /api/, OpenAI's elsewhere.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
from dataclasses import dataclass

from .headers import DECISION_HEADERS
from .errors import ApiError, error_body

ORIGINS_ENV = "REFUSAL_EDGE_ORIGINS"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
CORS_METHODS = "GET, POST, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type"
EXPOSED = ", ".join(DECISION_HEADERS).encode()


@dataclass(frozen=True)
class Access:
    """Who may call the server besides non-browser clients and its own page (both always may)."""

    origins: tuple[str, ...] = ()  # exact origins or patterns such as "http://localhost:*" or "*"
    hosts: tuple[str, ...] = ()  # extra Host names (without port), or "*" for any

    def origin_allowed(self, origin: str) -> bool:
        return any(fnmatch.fnmatchcase(origin, pattern) if "*" in pattern else origin == pattern.rstrip("/")
                   for pattern in self.origins)

    def host_allowed(self, name: str) -> bool:
        return "*" in self.hosts or name in LOOPBACK_NAMES or name in {h.lower() for h in self.hosts}


def origins_from_env(value: str | None) -> tuple[str, ...]:
    """``$REFUSAL_EDGE_ORIGINS``: comma-separated, as OLLAMA_ORIGINS."""
    return tuple(o.strip() for o in (value or "").split(",") if o.strip())


def split_host(header: str) -> tuple[str, int | None] | None:
    """``name:port`` or ``[v6]:port`` -> (lower-case name, port or None); None for what is not a host."""
    header = header.strip().lower()
    if header.startswith("["):
        name, bracket, rest = header[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    else:
        name, _, port = header.partition(":")
    if not name or (port and not port.isdigit()) or len(port) > 5:
        return None
    return name, int(port) if port else None


def json_content_type(value: str) -> bool:
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class BrowserGuard:
    """ASGI middleware in front of every route (plain ASGI: streaming and disconnects pass through untouched)."""

    def __init__(self, app, access: Access) -> None:
        self.app, self.access = app, access

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path, method = scope.get("path", ""), scope.get("method", "GET")
        refusal = self.refusal(scope, headers, method)
        if refusal is not None:
            return await _error(send, path, *refusal)
        origin = headers.get("origin")
        cors = origin is not None and origin.lower() != own_origin(scope, headers)  # an allowed other origin
        if cors and method == "OPTIONS":  # the preflight of an allowed origin's request
            return await _send(send, 204, b"", _cors_headers(origin) + [
                (b"access-control-allow-methods", CORS_METHODS.encode()),
                (b"access-control-allow-headers", CORS_HEADERS.encode()),
                (b"access-control-max-age", b"600")])
        if not cors:
            return await self.app(scope, receive, send)

        async def send_with_cors(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *_cors_headers(origin)]}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def refusal(self, scope, headers: dict, method: str) -> tuple[int, str, str] | None:
        """(status, code, message) for a request refused before any work, else None."""
        host = headers.get("host")
        if host is not None:
            parsed = split_host(host)
            server = scope.get("server") or (None, None)
            arrived = str(server[0]).lower() if server[0] is not None else None
            if parsed is None or not (self.access.host_allowed(parsed[0]) or _same_address(parsed[0], arrived)) \
                    or (parsed[1] is not None and server[1] is not None and parsed[1] != server[1]
                        and "*" not in self.access.hosts):
                return (403, "host_not_allowed",
                        f"Host {host!r} is not this server: it answers to its own address and loopback names; "
                        "refusal-edge serve --allowed-host NAME allows another (this refusal stops DNS rebinding)")
        origin = headers.get("origin")
        if origin is not None and origin.lower() != own_origin(scope, headers) and not self.access.origin_allowed(origin):
            return (403, "origin_not_allowed",
                    f"requests from web pages at {origin!r} are refused: refusal-edge serve --allowed-origin ORIGIN "
                    "(or $REFUSAL_EDGE_ORIGINS) allows one")
        sent = headers.get("content-type", "")
        if method in BODY_METHODS and from_browser(headers) and not json_content_type(sent):
            return (415, "unsupported_media_type", "a request from a web page must send its JSON body as "
                                                   f"'Content-Type: application/json' (got {sent or 'no type'!r})")
        return None


def from_browser(headers: dict) -> bool:
    """Browsers send ``Origin`` on every POST (cross-site or not) and ``Sec-Fetch-*`` on every request; curl, SDKs
    and scripts send neither, and a page cannot remove them."""
    return "origin" in headers or any(name.startswith("sec-fetch-") for name in headers)


def own_origin(scope, headers: dict) -> str | None:
    """The origin of pages this server serves: the scheme and the Host the browser used (already checked)."""
    host = headers.get("host")
    return f"{scope.get('scheme', 'http')}://{host.strip().lower()}" if host else None


def _same_address(name: str, arrived: str | None) -> bool:
    if arrived is None:
        return False
    try:
        return ipaddress.ip_address(name) == ipaddress.ip_address(arrived)
    except ValueError:
        return name == arrived  # a test client's "testserver"


def _cors_headers(origin: str) -> list[tuple[bytes, bytes]]:
    return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin"),
            (b"access-control-expose-headers", EXPOSED)]  # a page reads the decision headers only if exposed


async def _error(send, path: str, status: int, code: str, message: str) -> None:
    body = error_body(path, ApiError(status, message, code=code))
    await _send(send, status, json.dumps(body).encode(), [(b"content-type", b"application/json")])


async def _send(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
