"""Submit jobs and read their records.

Reading needs API_READ_TOKEN or API_TOKEN; submitting needs API_TOKEN (api/deps.py)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from ...db import get_one
from ...db.pool import Pool
from ...jobs import CRON_PREFIX, JOBS, Status
from ...ledger.reads import BadCursor, Cursor, list_jobs
from ...ledger.submit import DuplicateJob, HandOver, submit
from ..deps import WRITE_REFUSALS, HandOverDep, PoolDep, read_route, require_write
from ..responses import json_response
from ..schemas import (
    JOB_ID_PATTERN,
    JobPage,
    JobRecord,
    JobSubmit,
    Priority,
    Problem,
    errors_at,
)

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])

NOT_COMMITTED: dict[int | str, dict[str, Any]] = {
    503: {
        "model": Problem,
        "description": "PostgreSQL could not commit the job: it was not accepted. Retry under "
        "the same id (if the connection broke during the commit, the retry's 409 says so).",
    }
}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobRecord,
    dependencies=[Depends(require_write)],
    responses={
        **WRITE_REFUSALS,
        409: {"model": Problem, "description": "The job id was used before"},
        422: {"description": "Invalid job id, function or params"},
        **NOT_COMMITTED,
    },
    summary="Submit a job",
)
async def submit_job(body: JobSubmit, pool: PoolDep, hand_over: HandOverDep) -> Response:
    """Queue `function(**params)` under the client's `job_id` (FIFO). The id is unique forever.

    `202`: the job is committed to the ledger and will run (at least once), even if Redis is
    down now. `409`: the id was used before (the body says the job's status). Many jobs at
    once: `POST /api/v1/batches`.
    """
    try:
        params = body.validated_params()
    except ValidationError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY, detail=errors_at(exc, "body", "params")
        ) from None
    return await accept(pool, hand_over, body, params)


async def accept(
    pool: Pool, hand_over: HandOver, body: JobSubmit, params: dict[str, Any]
) -> Response:
    """Commit a checked submission and say how it went: 202 with the record, or 409. Shared
    with the hot path (api/fast_path.py), so both answer alike."""
    try:
        row = await submit(
            pool,
            hand_over,
            body.job_id,
            body.function,
            params,
            body.start_after(),
            body.priority,
        )
    except DuplicateJob as exc:
        return JSONResponse(
            status_code=status.HTTP_409_CONFLICT,
            content={
                "detail": f"job id {exc.job_id!r} is already taken (status: {exc.status}); "
                "every submission needs a new id",
                "job_id": exc.job_id,
                "status": exc.status,
            },
        )
    location = {"Location": f"/api/v1/jobs/{body.job_id}"}
    return json_response(row, status.HTTP_202_ACCEPTED, headers=location)


@router.get(
    "",
    **read_route(
        JobPage, "List jobs, newest first", {400: {"model": Problem, "description": "Bad cursor"}}
    ),
)
async def list_(
    pool: PoolDep,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    function: Annotated[str | None, Query(max_length=100)] = None,
    priority: Annotated[Priority | None, Query(description="only jobs of this priority")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[
        str | None, Query(max_length=400, description="next_cursor of a page")
    ] = None,
) -> JobPage:
    try:
        cursor = Cursor.decode(before) if before else None
    except BadCursor as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc)) from None
    if function is not None and function not in JOBS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY,
            detail=f"unknown function {function!r}; known: {', '.join(sorted(JOBS))}",
        )
    rows, nxt = await list_jobs(
        pool, status=status_, function=function, priority=priority, before=cursor, limit=limit
    )
    return JobPage(
        jobs=[JobRecord.model_validate(r) for r in rows], next_cursor=nxt.encode() if nxt else None
    )


@router.get(
    "/{job_id}",
    **read_route(
        JobRecord,
        "One job's record",
        {404: {"model": Problem, "description": "No job with this id"}},
    ),
)
async def get_job(pool: PoolDep, job_id: str) -> Any:
    row = None
    if re.fullmatch(JOB_ID_PATTERN, job_id) or job_id.startswith(CRON_PREFIX):
        row = await get_one(pool, "job.get", {"job_id": job_id})
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no job with id {job_id!r}")
    return row
