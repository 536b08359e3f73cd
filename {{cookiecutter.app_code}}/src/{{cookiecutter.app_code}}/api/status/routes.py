"""The status page's routes.

`GET /app/v1/status` renders counts, the job table (filtered, cursor-paged), workers, cron
schedules and a health line; `GET /app/v1/status/fragment` renders the same live sections
for the page's script to swap in every 2 s. `GET /app/v1/jobs/{job_id}` shows one job. The
buttons' POST routes (cancel, retry, retry all failed) are actions.py's.
Every route needs a session (api/session.py, api/routes/login.py): without one a page
redirects (303) to the login page and a fragment answers 401.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from ..deps import ArqDep, PagePoolDep, PoolDep, SettingsDep
from ..session import require_fragment, require_page
from . import actions
from .formatting import render
from .reading import job_context, status_context

router = APIRouter(prefix="/app", tags=["status page"], include_in_schema=False)
router.include_router(actions.router)


@router.get("", response_class=RedirectResponse)
@router.get("/", response_class=RedirectResponse)
async def app_root(request: Request) -> RedirectResponse:
    base = request.scope.get("root_path", "").rstrip("/")
    return RedirectResponse(f"{base}/app/v1/status", status_code=307)


def _page(request: Request, name: str, found: tuple[dict[str, Any], int]) -> HTMLResponse:
    """`<name>.html`; for a fragment, its live sections alone (`_<name>_live.html`)."""
    context, code = found
    live = request.url.path.endswith("/fragment")
    return render(request, f"_{name}_live.html" if live else f"{name}.html", context, code)


@router.get("/v1/status", response_class=HTMLResponse, dependencies=[Depends(require_page)])
@router.get("/v1/status/fragment", dependencies=[Depends(require_fragment)])
async def status_page(
    request: Request, settings: SettingsDep, pool: PagePoolDep, arq: ArqDep
) -> HTMLResponse:
    """Counts, the job table, workers, cron schedules and health, read on the page's own pool
    (its reads never take the connections submissions need)."""
    return _page(request, "status", await status_context(request, settings, pool, arq))


@router.get("/v1/jobs/{job_id}", response_class=HTMLResponse, dependencies=[Depends(require_page)])
@router.get("/v1/jobs/{job_id}/fragment", dependencies=[Depends(require_fragment)])
async def job_page(
    request: Request, job_id: str, settings: SettingsDep, pool: PoolDep
) -> HTMLResponse:
    return _page(request, "job", await job_context(request, settings, pool, job_id))
