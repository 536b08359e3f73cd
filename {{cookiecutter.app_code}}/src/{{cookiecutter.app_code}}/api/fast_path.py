"""The hot path of `POST /api/v1/jobs`: a valid submission with API_TOKEN, answered without
FastAPI's routing, dependency resolution and middleware chain.

Why: FastAPI's machinery around a submission (routing, solving the route's dependencies,
validating through them, five middlewares each wrapping `send`) cost more of the API's CPU
than the submission itself (py-spy under `make bench`: ~45% against ~35% for the ledger
insert). Issue #16's goal, 0.6 ms of API CPU a submission, is out of reach with it.

What stays identical: this handles only the request it can answer exactly as the route
would, and hands every other one, body and all, to the full application: a wrong or missing
token (401/403), a body that is not JSON or not `application/json`, any validation error (422),
a body over API_MAX_BODY_BYTES or without a Content-Length (413 and streaming limits). The
route (`routes/jobs.py`) stays the documented one (OpenAPI, /docs): both call the same
`accept()` for the commit and its answer, and this adds what the middlewares add: the
security headers, `traceparent` (continuing the caller's trace), the request's duration in
`<app>_http_request_duration_seconds`; `<app>_jobs_submitted_total` counts in `submit()`
for both. A 202 still means the row committed: the same one insert, before the answer.

Off when traces are exported (OTEL_EXPORTER_OTLP_ENDPOINT): then FastAPI's instrumentation
must see every request, and the full application answers them all.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core.config import Settings
from ..core.tracing import attached, current_traceparent, exporting, start_context
from ..db import DatabaseUnavailable, Role
from .middleware import API_CSP, SECURITY_HEADERS, HttpMiddleware
from .observe import REQUEST_SECONDS
from .responses import database_unavailable
from .routes.jobs import accept, router
from .schemas import JobSubmit

log = logging.getLogger(__name__)

PATH = router.prefix  # the route's path, and its template in the request metrics
EXTRA_HEADERS = [
    *((name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS.items()),
    (b"content-security-policy", API_CSP.encode()),
]


class FastSubmit(HttpMiddleware):
    """Outermost of the project's middlewares: answers the plain valid submission itself,
    passes everything else on (a request it read the body of, with that body replayed)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        super().__init__(app)
        token = settings.api_token.get_secret_value()
        self.authorization = f"Bearer {token}".encode() if token else b""
        self.limit = settings.api_max_body_bytes
        self.enabled = bool(token) and not exporting()
        self.timers: dict[int, Any] = {}

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        found = self.headers(scope)
        if found is None:
            await self.app(scope, receive, send)
            return
        body, complete = await read_body(receive)
        submission = self.parse(body) if complete else None
        if submission is None:
            await self.app(scope, replay(body, receive), send)
            return
        started = time.perf_counter()
        status = 500
        try:
            status = await self.submit(scope, send, submission, found.get(b"traceparent"))
        finally:
            timer = self.timers.get(status)
            if timer is None:
                timer = self.timers[status] = REQUEST_SECONDS.labels("POST", PATH, str(status))
            timer.observe(time.perf_counter() - started)

    def headers(self, scope: Scope) -> dict[bytes, bytes] | None:
        """The request's headers when they qualify: API_TOKEN, JSON, a body within the limit."""
        found: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in (b"authorization", b"content-type", b"content-length", b"traceparent"):
                found[name] = value
            elif name == b"tracestate":
                return None  # rare: the full path carries it exactly
        length = found.get(b"content-length", b"")
        if not (
            found.get(b"content-type") == b"application/json"
            and length.isdigit()
            and int(length) <= self.limit
            and secrets.compare_digest(found.get(b"authorization", b""), self.authorization)
        ):
            return None
        return found

    @staticmethod
    def parse(body: bytes) -> tuple[JobSubmit, dict[str, Any]] | None:
        """The submission and its checked params, or None for anything the route must judge
        (orjson reads a subset of what the route's parser reads, identically)."""
        try:
            submission = JobSubmit.model_validate(orjson.loads(body))
            return submission, submission.validated_params()
        except (orjson.JSONDecodeError, ValidationError):
            return None

    async def submit(
        self,
        scope: Scope,
        send: Send,
        submission: tuple[JobSubmit, dict[str, Any]],
        traceparent: bytes | None,
    ) -> int:
        """Commit and answer, in the request's trace; returns the status sent."""
        headers = {"traceparent": traceparent.decode("latin-1")} if traceparent else {}
        state = scope["app"].state
        with attached(start_context(headers)):
            try:
                response = await accept(state.database[Role.APP], state.hand_over, *submission)
            except DatabaseUnavailable as exc:
                log.warning("POST %s: %s", PATH, exc)
                response = database_unavailable("POST")
            trace = (current_traceparent() or "").encode()
        await answer(send, response, trace)
        return response.status_code


async def read_body(receive: Receive) -> tuple[bytes, bool]:
    """The whole body, and whether it came whole (False: the client went away)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True


def replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for the full application: the body read here first, then the real one."""
    pending = True

    async def again() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


async def answer(send: Send, response: Response, traceparent: bytes) -> None:
    """Send `response` with the headers the middlewares add to every answer."""
    headers = [*response.raw_headers, *EXTRA_HEADERS]
    if traceparent:
        headers.append((b"traceparent", traceparent))
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
