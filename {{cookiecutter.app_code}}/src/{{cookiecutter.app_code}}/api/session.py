"""The status page's sessions: a signed cookie, CSRF tokens, the login throttle, safe redirects.

A session is a cookie signed with SESSION_SECRET (itsdangerous, with a timestamp): it holds the
role the login gave (`read` for API_READ_TOKEN, `write` for API_TOKEN), a CSRF token, and a
keyed fingerprint of that token, so rotating a token ends the sessions made with it. It lasts
SESSION_MAX_AGE_SECONDS from the login, checked from the signed timestamp (not the cookie's
Max-Age, which a client may ignore). The cookie is HttpOnly, SameSite=Strict, Secure when the
request came over HTTPS (behind a TLS proxy: uvicorn's --proxy-headers), and sent to the
status page's paths only, never to /api.

CSRF: every POST (login, logout, the page's buttons: api/status/actions.py) carries the session's
token in a hidden `csrf_token` field, checked in constant time. The login form is no
exception: the login page starts an anonymous session (a CSRF token and no role), so a form
posted from another site, which has neither that cookie (SameSite=Strict) nor the token, is
refused. An Origin check was not chosen: under the page's `Referrer-Policy: no-referrer`,
browsers send `Origin: null` with a form POST. A login replaces the token (no fixation).

Logging out deletes the cookie; a copy of it taken earlier stays valid until it expires (the
cookie is the whole session: there is no server-side store to revoke it from). Change
SESSION_SECRET to end every session at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from ..core.config import Settings
from .deps import Access

SALT = "status-page-session"
# Failed logins one client address may make within the window before it must wait.
LOGIN_FAILURES = 5
LOGIN_WINDOW_SECONDS = 60.0
MAX_NEXT_CHARS = 2000
MAX_FORM_FIELDS = 10
FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class PageSession:
    """A visitor of the status page: `role` None until the login (the login form's token)."""

    role: Access | None
    csrf: str
    fingerprint: str = ""

    @property
    def read_only(self) -> bool:
        return self.role is not Access.WRITE


class Sessions:
    """Reads, makes and writes the session cookie."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._key = settings.session_secret.get_secret_value().encode()
        self._serializer = URLSafeTimedSerializer(settings.session_secret.get_secret_value(), SALT)
        self.max_age = settings.session_max_age_seconds
        self.cookie = f"{settings.app_code}_session"

    def _fingerprint(self, role: Access) -> str:
        token = self.settings.api_token if role is Access.WRITE else self.settings.api_read_token
        digest = hmac.new(self._key, token.get_secret_value().encode(), hashlib.sha256)
        return digest.hexdigest()[:32]

    def read(self, request: Request) -> PageSession | None:
        """The request's session; None when it has none, or a forged, expired or stale one."""
        raw = request.cookies.get(self.cookie)
        if not raw or not self._key:
            return None
        try:
            data: Any = self._serializer.loads(raw, max_age=self.max_age)
        except BadSignature:  # SignatureExpired included
            return None
        if not isinstance(data, dict) or not isinstance(data.get("c"), str):
            return None
        role = {"read": Access.READ, "write": Access.WRITE}.get(data.get("r") or "")
        if role is None:
            return PageSession(None, data["c"])
        fingerprint = str(data.get("f", ""))
        if not hmac.compare_digest(fingerprint, self._fingerprint(role)):
            return None  # made with a token that has been rotated since
        return PageSession(role, data["c"], fingerprint)

    @staticmethod
    def anonymous() -> PageSession:
        return PageSession(None, secrets.token_urlsafe(32))

    def signed_in(self, role: Access) -> PageSession:
        return PageSession(role, secrets.token_urlsafe(32), self._fingerprint(role))

    @staticmethod
    def csrf_ok(session: PageSession | None, given: str) -> bool:
        return session is not None and hmac.compare_digest(given.encode(), session.csrf.encode())

    def save(self, response: Response, request: Request, session: PageSession) -> None:
        data = {"r": session.role.value if session.role else None, "c": session.csrf}
        if session.fingerprint:
            data["f"] = session.fingerprint
        response.set_cookie(
            self.cookie,
            self._serializer.dumps(data),
            max_age=self.max_age,
            path=cookie_path(request),
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )

    def clear(self, response: Response, request: Request) -> None:
        response.delete_cookie(
            self.cookie,
            path=cookie_path(request),
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )


class LoginThrottle:
    """Failed logins per client address: after LOGIN_FAILURES within LOGIN_WINDOW_SECONDS,
    every login from that address answers 429 until the oldest failure leaves the window.

    In memory, per API process: with several processes (WEB_CONCURRENCY) or hosts, each counts
    its own, so the bound is LOGIN_FAILURES x processes a minute; a shared store (Redis) would
    make it one. The address is the connection's, or X-Forwarded-For when uvicorn trusts the
    proxy that sent it (--forwarded-allow-ips, 127.0.0.1 by default). At most `max_clients`
    addresses are remembered (the oldest are forgotten first), so memory stays bounded.
    """

    def __init__(
        self,
        limit: int = LOGIN_FAILURES,
        window: float = LOGIN_WINDOW_SECONDS,
        max_clients: int = 10_000,
    ) -> None:
        self.limit, self.window, self.max_clients = limit, window, max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, client: str, now: float) -> deque[float]:
        failures = self._failures.get(client, deque())
        while failures and now - failures[0] >= self.window:
            failures.popleft()
        return failures

    def retry_after(self, client: str) -> int:
        """Seconds this client must wait before its next login; 0: it may try now."""
        now = time.monotonic()
        failures = self._recent(client, now)
        if len(failures) < self.limit:
            return 0
        return max(1, int(self.window - (now - failures[0])) + 1)

    def failed(self, client: str) -> None:
        now = time.monotonic()
        failures = self._recent(client, now)
        failures.append(now)
        self._failures[client] = failures
        self._failures.move_to_end(client)
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)


async def read_form(request: Request) -> dict[str, str] | None:
    """A posted form's fields (the first value of each); None when the body is not a form or
    has more than MAX_FORM_FIELDS fields. The body is already bounded by BodySizeLimit."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != FORM_TYPE:
        return None
    body = (await request.body()).decode("utf-8", "replace")
    try:
        fields = parse_qs(body, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except ValueError:  # too many fields: no form of this page's
        return None
    return {name: values[0] for name, values in fields.items()}


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def base_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def cookie_path(request: Request) -> str:
    return f"{base_path(request)}/app"


def local_next(value: str | None, request: Request) -> str:
    """Where to go after the login: a path of the status page on this server, else the status
    page. Never another host: no scheme, no `//host`, no backslash, nothing unprintable."""
    base = base_path(request)
    default = f"{base}/app/v1/status"
    if not value or len(value) > MAX_NEXT_CHARS or not value.isprintable():
        return default
    parts = urlsplit(value)
    if "\\" in value or parts.scheme or parts.netloc or not value.startswith(f"{base}/app/"):
        return default
    return value


def login_url(request: Request, next_path: str | None = None) -> str:
    target = next_path if next_path is not None else request.url.path
    if next_path is None and request.url.query:
        target += "?" + request.url.query
    return f"{base_path(request)}/app/v1/login?next={quote(target, safe='')}"


# --- dependencies for the page's routes ------------------------------------------------------


class LoginRequired(Exception):
    """Raised by require_page / require_fragment; answered by the handler `install` adds."""

    def __init__(self, location: str, fragment: bool) -> None:
        super().__init__(location)
        self.location = location
        self.fragment = fragment


async def get_sessions(request: Request) -> Sessions:
    return request.app.state.sessions  # type: ignore[no-any-return]


async def get_throttle(request: Request) -> LoginThrottle:
    return request.app.state.login_throttle  # type: ignore[no-any-return]


SessionsDep = Annotated[Sessions, Depends(get_sessions)]
ThrottleDep = Annotated[LoginThrottle, Depends(get_throttle)]


def _signed_in(request: Request, sessions: Sessions, fragment: bool) -> PageSession:
    session = sessions.read(request)
    if session is None or session.role is None:
        raise LoginRequired(login_url(request), fragment)
    request.state.page_session = session  # for the templates (status._base_context)
    return session


async def require_page(request: Request, sessions: SessionsDep) -> PageSession:
    """A page: without a session, 303 to the login page, which comes back here after."""
    return _signed_in(request, sessions, fragment=False)


async def require_fragment(request: Request, sessions: SessionsDep) -> PageSession:
    """A fragment (fetched by status.js): without a session, 401; the script then sends the
    reader to the login page."""
    return _signed_in(request, sessions, fragment=True)


PageSessionDep = Annotated[PageSession, Depends(require_page)]


def install(app: FastAPI, settings: Settings) -> None:
    """The sessions, the throttle, and the answer to LoginRequired."""
    app.state.sessions = Sessions(settings)
    app.state.login_throttle = LoginThrottle()

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, exc: LoginRequired) -> Response:
        if exc.fragment:
            return HTMLResponse(
                "<p>Your session has ended: log in again.</p>",
                status_code=401,
                headers={"Cache-Control": "no-store"},
            )
        return RedirectResponse(exc.location, status_code=303)
