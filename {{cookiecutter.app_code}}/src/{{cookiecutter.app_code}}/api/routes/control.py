"""Cancel and retry a job (API_TOKEN). The ledger decides (ledger/control.py); Redis follows."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Response, status
from fastapi.responses import JSONResponse

from ...jobs import CRON_PREFIX
from ...ledger.control import JobConflict, JobNotFound, cancel_job, retry_job
from ..deps import WRITE_REFUSALS, HandOverDep, PoolDep, require_write
from ..responses import json_response
from ..schemas import JOB_ID_PATTERN, JobRecord, Problem

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])

NOT_FOUND = {"model": Problem, "description": "No job with this id"}
UNAVAILABLE = {
    "model": Problem,
    "description": "PostgreSQL could not commit the change: nothing was done; send it again.",
}


async def _act(job_id: str, act: Callable[[], Awaitable[dict[str, Any]]]) -> Response:
    if not (re.fullmatch(JOB_ID_PATTERN, job_id) or job_id.startswith(CRON_PREFIX)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no job with id {job_id!r}")
    try:
        record = await act()
    except JobNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    except JobConflict as exc:
        return JSONResponse(
            status_code=status.HTTP_409_CONFLICT,
            content={"detail": str(exc), "job_id": exc.job_id, "status": exc.status},
        )
    location = {"Location": f"/api/v1/jobs/{job_id}"}
    return json_response(record, status.HTTP_202_ACCEPTED, headers=location)


def _control(path: str, summary: str, conflict: str) -> Callable[[Any], Any]:
    """The route decorator both actions share: API_TOKEN, a JobRecord with 202, and the
    refusals; only the 409's meaning differs."""
    return router.post(
        path,
        status_code=status.HTTP_202_ACCEPTED,
        response_model=JobRecord,
        dependencies=[Depends(require_write)],
        responses={
            **WRITE_REFUSALS,
            404: NOT_FOUND,
            409: {"model": Problem, "description": conflict},
            503: UNAVAILABLE,
        },
        summary=summary,
    )


@_control(
    "/{job_id}/cancel",
    "Cancel a queued or running job",
    "The job has finished (succeeded, failed or cancelled): nothing to cancel. The body says "
    "its status.",
)
async def cancel(job_id: str, pool: PoolDep, hand_over: HandOverDep) -> Response:
    """`202`: the ledger says `cancelled` for good. A queued job never starts; a running one is
    aborted (the worker cancels it at its next poll, within about a second) and its end is not
    recorded, whatever it does meanwhile. `409` for a finished job. A cancelled job can run
    again: `POST /api/v1/jobs/{id}/retry`.
    """
    return await _act(job_id, lambda: cancel_job(pool, hand_over, job_id))


@_control(
    "/{job_id}/retry",
    "Run a failed or cancelled job again",
    "The job is not failed or cancelled (queued, running or succeeded): it is not run again. "
    "The body says its status.",
)
async def retry(job_id: str, pool: PoolDep, hand_over: HandOverDep) -> Response:
    """`202`: the job is `queued` again under the same id, at the back of the queue, and will
    run as a new attempt (`attempts` keeps the earlier ones and their errors; `tries` goes on
    counting). Its retry policy applies afresh. `409` unless it is failed or cancelled.
    """
    return await _act(job_id, lambda: retry_job(pool, hand_over, job_id))
