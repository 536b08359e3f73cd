"""Submit many jobs in one request: POST /api/v1/batches (needs API_TOKEN, api/deps.py).

Each item is checked and accepted or refused on its own; the accepted ones are committed in
one statement and handed to Redis in one round trip (ledger/submit.py). The whole request is
refused only when the envelope is wrong: not `{"jobs": [...]}`, no item, more than MAX_BATCH
items (422), or a body over API_MAX_BATCH_BYTES (413).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response, status
from pydantic import ValidationError

from ...ledger.submit import Refused, submit_many
from ...queue import Submission
from ..deps import WRITE_REFUSALS, HandOverDep, PoolDep, require_write
from ..responses import json_response
from ..schemas import MAX_BATCH, BatchResult, BatchSubmit, JobSubmit, Problem, errors_at

router = APIRouter(prefix="/api/v1/batches", tags=["jobs"])


@router.post(
    "",
    response_model=BatchResult,
    dependencies=[Depends(require_write)],
    responses={
        **WRITE_REFUSALS,
        413: {"model": Problem, "description": "The body is over API_MAX_BATCH_BYTES"},
        422: {"description": f"No `jobs` list, no item, or more than {MAX_BATCH} items"},
        503: {
            "model": Problem,
            "description": "PostgreSQL could not commit the batch: nothing was accepted. "
            "Send it again as it was (ids it did commit come back 409).",
        },
    },
    summary=f"Submit up to {MAX_BATCH} jobs",
)
async def submit_batch(body: BatchSubmit, pool: PoolDep, hand_over: HandOverDep) -> Response:
    """Each item is a submission exactly as for `POST /api/v1/jobs`. The answer (200) lists,
    in order, `{job_id, status_code, detail?, status?}`: `202` committed (it will run), `409`
    the id was used before or earlier in this batch, `422` the item is invalid.
    """
    results: list[dict[str, Any]] = []
    fresh: list[Submission] = []
    seen: set[str] = set()
    for n, item in enumerate(body.jobs):
        result, job = check(n, item, seen)
        results.append(result)
        if job is not None:
            seen.add(job[0])
            fresh.append(job)
    outcome = await submit_many(pool, hand_over, fresh)
    accepted = 0
    for result in results:
        if result["status_code"] == 0:
            refused = outcome[result["job_id"]]
            if refused is None:
                result["status_code"] = status.HTTP_202_ACCEPTED
                accepted += 1
            else:
                result.update(conflict(result["job_id"], refused))
    return json_response({"accepted": accepted, "results": results})


def check(n: int, item: Any, seen: set[str]) -> tuple[dict[str, Any], Submission | None]:
    """One item's result so far (status_code 0: valid, up to the ledger) and its submission."""
    job_id = item.get("job_id") if isinstance(item, dict) else None
    job_id = job_id if isinstance(job_id, str) else None
    where: tuple[str | int, ...] = ("body", "jobs", n)
    try:
        body = JobSubmit.model_validate(item)
    except ValidationError as exc:
        return {"job_id": job_id, "status_code": 422, "detail": errors_at(exc, *where)}, None
    try:
        params = body.validated_params()
    except ValidationError as exc:  # the job's own params model
        detail = errors_at(exc, *where, "params")
        return {"job_id": job_id, "status_code": 422, "detail": detail}, None
    if body.job_id in seen:
        again = (
            f"job id {body.job_id!r} appears earlier in this batch; every submission needs a new id"
        )
        return {"job_id": body.job_id, "status_code": 409, "detail": again}, None
    job = Submission(body.job_id, body.function, params, body.start_after(), body.priority)
    return {"job_id": body.job_id, "status_code": 0}, job


def conflict(job_id: str, refused: Refused) -> dict[str, Any]:
    return {
        "status_code": status.HTTP_409_CONFLICT,
        "status": refused.status,
        "detail": f"job id {job_id!r} is already taken (status: {refused.status or 'unknown'}); "
        "every submission needs a new id",
    }
