"""The status page's buttons: Cancel, Retry, and Retry all failed (with a confirmation page).

Each is a POST form carrying the session's CSRF token; `guard` checks it, and that the session
has full access (API_TOKEN), before anything is done: a forged POST (no token, a wrong one, no
session, or a read-only session) gets a 403 page saying what to do. The routes call the same
ledger functions as the API's routes (ledger/control.py), not the API over HTTP; after a
button the reader goes back to the page they pressed it on (`next`, a path of this page).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ...core.config import Settings
from ...ledger.control import JobConflict, JobNotFound, cancel_job, retry_failed, retry_job
from ...ledger.reads import count_jobs, matching_ids
from ..deps import HandOverDep, PoolDep, SettingsDep
from ..session import (
    PageSession,
    PageSessionDep,
    SessionsDep,
    base_path,
    local_next,
    read_form,
)
from .formatting import base_context, render
from .reading import Filters

router = APIRouter(prefix="/v1")  # inside routes.router (/app)

# Retry all failed retries at most this many jobs at once (the confirmation says so).
BULK_CAP = 10_000

NOT_LOGGED_IN = (
    "You are not logged in (or your session has ended), so nothing was done: log in with "
    "API_TOKEN, then press the button again."
)
NO_CSRF = (
    "This form came without its security token (an old page, or a form sent from another "
    "site), so nothing was done: reload the status page and press the button again."
)
READ_ONLY = (
    "Your session is read-only (logged in with API_READ_TOKEN), so nothing was done: log out "
    "and log in with API_TOKEN to cancel or retry jobs."
)


def _message(
    request: Request, settings: Settings, title: str, message: str, code: int
) -> HTMLResponse:
    context = {
        **base_context(request, settings, datetime.now(UTC)),
        "title": title,
        "message": message,
    }
    return render(request, "message.html", context, code)


async def guard(
    request: Request, settings: Settings, sessions: Any
) -> tuple[dict[str, str], None] | tuple[None, HTMLResponse]:
    """The posted form of a full-access session with its CSRF token; else the 403 page."""
    form = await read_form(request) or {}
    session: PageSession | None = sessions.read(request)
    if session is not None and session.role is not None:
        request.state.page_session = session  # the 403 page's header shows who is logged in
    if session is None or session.role is None:
        why = NOT_LOGGED_IN
    elif not sessions.csrf_ok(session, form.get("csrf_token", "")):
        why = NO_CSRF
    elif session.read_only:
        why = READ_ONLY
    else:
        return form, None
    return None, _message(request, settings, "Nothing was done", why, 403)


def _back(request: Request, form: dict[str, str]) -> RedirectResponse:
    return RedirectResponse(local_next(form.get("next"), request), status_code=303)


async def _one_job(
    request: Request, settings: Settings, sessions: Any, what: str, act: Any
) -> Response:
    form, refused = await guard(request, settings, sessions)
    if form is None:
        return refused or _message(request, settings, "Nothing was done", NO_CSRF, 403)
    try:
        await act()
    except JobNotFound as exc:
        return _message(request, settings, f"Not {what}", str(exc), 404)
    except JobConflict as exc:
        return _message(request, settings, f"Not {what}", str(exc), 409)
    return _back(request, form)


@router.post("/jobs/{job_id}/cancel", response_class=HTMLResponse)
async def cancel(
    request: Request,
    job_id: str,
    settings: SettingsDep,
    sessions: SessionsDep,
    pool: PoolDep,
    hand_over: HandOverDep,
) -> Response:
    """Cancel a queued or running job (the API's POST /api/v1/jobs/{id}/cancel)."""
    return await _one_job(
        request, settings, sessions, "cancelled", lambda: cancel_job(pool, hand_over, job_id)
    )


@router.post("/jobs/{job_id}/retry", response_class=HTMLResponse)
async def retry(
    request: Request,
    job_id: str,
    settings: SettingsDep,
    sessions: SessionsDep,
    pool: PoolDep,
    hand_over: HandOverDep,
) -> Response:
    """Run a failed or cancelled job again (the API's POST /api/v1/jobs/{id}/retry)."""
    return await _one_job(
        request, settings, sessions, "retried", lambda: retry_job(pool, hand_over, job_id)
    )


def _failed_filters(params: dict[str, str] | Any) -> Filters:
    """The list's filters, narrowed to failed jobs (the only ones Retry all failed touches)."""
    filters = Filters.parse({k: v for k, v in dict(params).items() if k != "status"})
    filters.status = "failed"
    filters.cursor = filters.cursor_raw = None
    return filters


def _failed_args(filters: Filters) -> dict[str, str | None]:
    """count_jobs's and matching_ids's filters: the list's, for failed jobs."""
    args = filters.list_args()
    keep = ("function", "priority", "id_prefix", "job_id")
    return {"status": "failed", **{name: args[name] for name in keep}}


@router.get("/status/retry-failed", response_class=HTMLResponse)
async def confirm_retry_failed(
    request: Request,
    settings: SettingsDep,
    pool: PoolDep,
    session: PageSessionDep,
) -> Response:
    """The confirmation step: how many failed jobs the list's filters match, and the button."""
    if session.read_only:
        return _message(request, settings, "Nothing to confirm", READ_ONLY, 403)
    filters = _failed_filters(request.query_params)
    count = await count_jobs(pool, cap=BULK_CAP, **_failed_args(filters))
    context = {
        **base_context(request, settings, datetime.now(UTC)),
        "filters": filters,
        "count": min(count, BULK_CAP),
        "over_cap": count > BULK_CAP,
        "cap": BULK_CAP,
    }
    return render(request, "confirm.html", context)


@router.post("/status/retry-failed", response_class=HTMLResponse)
async def do_retry_failed(
    request: Request,
    settings: SettingsDep,
    sessions: SessionsDep,
    pool: PoolDep,
    hand_over: HandOverDep,
) -> Response:
    """Retry the failed jobs the confirmed filters match (at most BULK_CAP), then back to the
    list with how many were retried."""
    form, refused = await guard(request, settings, sessions)
    if form is None:
        return refused or _message(request, settings, "Nothing was done", NO_CSRF, 403)
    filters = _failed_filters(form)
    # The same filters as the count the reader confirmed; retry_failed skips a job that
    # stopped being failed meanwhile.
    ids = await matching_ids(pool, limit=BULK_CAP, **_failed_args(filters))
    retried = await retry_failed(pool, hand_over, job_ids=ids)
    query = filters.query(status=None)
    extra = {"retried": str(retried), "confirmed": form.get("expected", "")}
    sep = "&" if query else "?"
    return RedirectResponse(
        f"{base_path(request)}/app/v1/status{query}{sep}{urlencode(extra)}", status_code=303
    )
