"""The status page's login and logout (the session itself: api/session.py).

`GET /app/v1/login` shows a form that takes a token; `POST /app/v1/login` checks it and starts a
session (`read` for API_READ_TOKEN, `write` for API_TOKEN), then goes back to `next` (a path of
the status page on this server, nothing else). `POST /app/v1/logout` ends it. Both POSTs need
the session's CSRF token; failed logins are throttled per client address.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ...core.config import Settings
from ..deps import SettingsDep, access_of
from ..session import (
    PageSession,
    SessionsDep,
    ThrottleDep,
    base_path,
    client_address,
    local_next,
    read_form,
)
from ..status.formatting import base_context, render

router = APIRouter(prefix="/app/v1", tags=["status page"], include_in_schema=False)

MAX_TOKEN_CHARS = 512


def _login_page(
    request: Request,
    settings: Settings,
    session: PageSession,
    *,
    next_path: str,
    message: str | None = None,
    kind: str = "alert",
    status_code: int = 200,
) -> HTMLResponse:
    context = {
        **base_context(request, settings, datetime.now(UTC)),
        "session": None,  # not signed in: the header shows no navigation
        "csrf_token": session.csrf,
        "session_seconds": settings.session_max_age_seconds,
        "next": next_path,
        "message": message,
        "message_kind": kind,
    }
    return render(request, "login.html", context, status_code)


@router.get("/login", response_class=HTMLResponse)
async def login_page(
    request: Request,
    settings: SettingsDep,
    sessions: SessionsDep,
    next_: Annotated[str | None, Query(alias="next")] = None,
) -> Response:
    """The login form; straight on to `next` for a visitor who is signed in already."""
    target = local_next(next_, request)
    session = sessions.read(request)
    if session is not None and session.role is not None:
        return RedirectResponse(target, status_code=303)
    signed_out = request.query_params.get("out") == "1"
    message = "You are logged out." if signed_out else None
    fresh = session or sessions.anonymous()
    response = _login_page(
        request, settings, fresh, next_path=target, message=message, kind="notice"
    )
    if session is None:
        sessions.save(response, request, fresh)
    return response


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request, settings: SettingsDep, sessions: SessionsDep, throttle: ThrottleDep
) -> Response:
    form = await read_form(request) or {}
    target = local_next(form.get("next"), request)
    session = sessions.read(request)
    client = client_address(request)
    wait = throttle.retry_after(client)
    if wait:
        fresh = session or sessions.anonymous()
        page = _login_page(
            request,
            settings,
            fresh,
            next_path=target,
            message=f"Too many failed logins from your address: wait {wait} s, then try again "
            "with API_READ_TOKEN or API_TOKEN from the service's .env.",
            status_code=429,
        )
        page.headers["Retry-After"] = str(wait)
        if session is None:
            sessions.save(page, request, fresh)
        return page
    if session is not None and session.role is not None:
        return RedirectResponse(target, status_code=303)  # logged in already (another tab)
    if session is None or not sessions.csrf_ok(session, form.get("csrf_token", "")):
        # No form, an old form, or no cookie (blocked, or the form came from another site).
        fresh = sessions.anonymous()
        page = _login_page(
            request,
            settings,
            fresh,
            next_path=target,
            message="This login form has expired or came without its cookie: log in again "
            "with the form below (the page needs cookies enabled).",
            status_code=403,
        )
        sessions.save(page, request, fresh)
        return page
    access = access_of(settings, form.get("token", "").strip()[:MAX_TOKEN_CHARS])
    if access is None:
        throttle.failed(client)
        return _login_page(
            request,
            settings,
            session,
            next_path=target,
            message="That token is neither API_READ_TOKEN nor API_TOKEN: paste one of them "
            "from the service's .env (API_READ_TOKEN to look, API_TOKEN for everything).",
            status_code=401,
        )
    throttle.succeeded(client)
    response = RedirectResponse(target, status_code=303)
    sessions.save(response, request, sessions.signed_in(access))
    return response


@router.post("/logout", response_class=HTMLResponse)
async def logout(request: Request, settings: SettingsDep, sessions: SessionsDep) -> Response:
    form = await read_form(request) or {}
    session = sessions.read(request)
    login = f"{base_path(request)}/app/v1/login"
    if session is None or session.role is None:
        return RedirectResponse(login, status_code=303)  # nothing to end
    if not sessions.csrf_ok(session, form.get("csrf_token", "")):
        context = {
            **base_context(request, settings, datetime.now(UTC)),
            "title": "Not logged out",
            "message": "The logout form came without its token (an old page, or a form from "
            "another site): you are still logged in. Open the status page and press "
            "Log out there.",
        }
        return render(request, "message.html", context, 403)
    response = RedirectResponse(f"{login}?out=1", status_code=303)
    sessions.clear(response, request)
    return response
