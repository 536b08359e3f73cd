"""Small ASGI middlewares: their base, a request body size limit and security headers.

Plain ASGI (not Starlette's BaseHTTPMiddleware): no extra task per request, and a streamed
body is counted as it arrives instead of being read whole first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# For JSON and everything else that is not a page: nothing may load, nothing may frame it.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


Limit = tuple[int, str]  # bytes, and the setting that sets them


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a streamed body passes the limit; answered with a 413."""

    def __init__(self, limit: Limit) -> None:
        super().__init__(413, detail=too_large(limit))


def too_large(limit: Limit, size: int | None = None) -> str:
    got = f"is {size} bytes" if size is not None else "is larger than that"
    return (
        f"the request body {got}; the limit is {limit[0]} bytes ({limit[1]}): "
        "send smaller params (or fewer jobs a batch), or keep large data elsewhere and pass "
        "a reference to it"
    )


class HttpMiddleware:
    """Base of the project's ASGI middlewares: HTTP requests go to `http`, every other scope
    (lifespan, websocket) passes through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class BodySizeLimit(HttpMiddleware):
    """413 with a JSON message for a body over `limit` bytes (`paths`: other limits by path).

    A Content-Length over the limit is refused before the body is read; a body without one
    (chunked) is counted as it streams in and refused as soon as it passes the limit.
    """

    def __init__(
        self, app: ASGIApp, limit: Limit, paths: Mapping[str, Limit] | None = None
    ) -> None:
        super().__init__(app)
        self.default = limit
        self.paths = dict(paths or {})

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.paths.get(scope["path"], self.default)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit[0]:
            await self._refuse(send, too_large(limit, int(declared)))
            return

        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit[0]:
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as exc:
            if started:
                raise
            await self._refuse(send, str(exc.detail))

    @staticmethod
    async def _refuse(send: Send, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class SecurityHeaders(HttpMiddleware):
    """nosniff, no referrer, no framing on every response; a CSP that allows nothing on every
    response that has none of its own.

    A header a route set itself wins: every HTML page sends its own CSP (the status page, its
    login, and /docs and /redoc, whose assets this server serves: api/routes/docs.py). A page
    added without one gets the deny-all policy, and shows unstyled until it sets its own.
    """

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
                if "content-security-policy" not in headers:
                    headers["Content-Security-Policy"] = API_CSP
            await send(message)

        await self.app(scope, receive, with_headers)
