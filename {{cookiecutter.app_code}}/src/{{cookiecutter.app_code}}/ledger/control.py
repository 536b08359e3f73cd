"""Cancel and retry: the ledger decides, Redis follows.

Both verbs commit in the ledger first, through SECURITY DEFINER functions (the API's role
may not UPDATE job rows; V7__job_control.sql), then tell arq:

- cancel: a queued job is taken out of arq's queue (a worker that claimed it already finds
  the cancel when it records its start, and does not run it); a running one gets arq's abort
  (the worker cancels its task at its next poll; its end is not recorded over the cancel).
  The row lock makes a cancel racing the start consistent: the cancel commits first (the job
  never starts) or the start does (the run is aborted, and its attempt recorded `cancelled`).
- retry: a failed or cancelled job goes back to `queued` (at the back of the queue) under its
  own id, arq's traces of the earlier runs are cleared, and it is handed to Redis like a
  submission (HandOver), in its own priority's queue and not before its run_at. If Redis
  misses it, the dispatcher delivers it from the ledger.

Used by the API's routes (api/routes/jobs.py) and the status page's buttons.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..core.tracing import traceparent
from ..db import get_many, get_one
from ..db.pool import Pool
from ..queue import (
    RETRY_KWARG,
    QueueUnavailable,
    Submission,
    abort,
    clear_for_rerun,
    drop_queued,
    retry_marker,
    traced,
)
from .submit import HandOver

log = logging.getLogger(__name__)

CANCELLABLE = ("queued", "in_progress")
RETRYABLE = ("failed", "cancelled")
# Ids retried in one statement at the most (retry_failed walks more in several).
RETRY_CHUNK = 1000


class JobNotFound(LookupError):
    """No job with this id (404)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job with id {job_id!r}; check the id (GET /api/v1/jobs lists jobs)")


class JobConflict(Exception):
    """The job is in a state the verb does not apply to (409); the message says which do."""

    def __init__(self, job_id: str, status: str, verb: str, allowed: Sequence[str]) -> None:
        self.job_id, self.status = job_id, status
        hint = {
            "cancel": "only queued or running (in_progress) jobs can be cancelled",
            "retry": "only failed or cancelled jobs can be retried"
            + ("; cancel it first" if status in CANCELLABLE else ""),
        }[verb]
        super().__init__(f"job {job_id!r} is {status}; {hint}")
        self.allowed = tuple(allowed)


async def cancel_job(db: Pool, hand_over: HandOver, job_id: str) -> dict[str, Any]:
    """Cancel a queued or running job; returns its record (status `cancelled`).

    Raises JobNotFound, or JobConflict when the job has finished already."""
    row = await get_one(db, "job.cancel", {"job_id": job_id})
    if row is None:
        raise JobNotFound(job_id)
    if row["previous"] not in CANCELLABLE:
        raise JobConflict(job_id, row["previous"], "cancel", CANCELLABLE)
    try:
        if row["previous"] == "queued":
            await drop_queued(hand_over.arq, hand_over.settings.queue_name, job_id)
        else:
            await abort(hand_over.arq, job_id)
    except QueueUnavailable as exc:
        # The ledger has the cancel: a job not started yet will not start. A running one runs
        # on (Redis carries the abort), but its end is not recorded over the cancel.
        log.warning("job %s: cancelled in the ledger; %s", job_id, exc)
    record = await get_one(db, "job.get", {"job_id": job_id})
    assert record is not None
    return record


async def retry_job(db: Pool, hand_over: HandOver, job_id: str) -> dict[str, Any]:
    """Run a failed or cancelled job again under its id; returns its record (`queued`).

    Raises JobNotFound, or JobConflict when the job is not failed or cancelled."""
    rows = await retry_jobs(db, hand_over, [job_id])
    if not rows:
        raise JobNotFound(job_id)
    if rows[0]["status"] != "queued" or rows[0]["previous"] not in RETRYABLE:
        raise JobConflict(job_id, rows[0]["previous"], "retry", RETRYABLE)
    record = await get_one(db, "job.get", {"job_id": job_id})
    assert record is not None
    return record


async def retry_jobs(db: Pool, hand_over: HandOver, job_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Retry the failed or cancelled jobs among `job_ids` in one statement; one row per id
    found (`previous`, `status`: `queued` when it was retried). Ids not found are left out."""
    if not job_ids:
        return []
    rows = await get_many(db, "job.retry", {"job_ids": list(job_ids)})
    again = [r for r in rows if r["status"] == "queued" and r["previous"] in RETRYABLE]
    if again:
        await _hand_over(db, hand_over, again)
    return rows


async def retry_failed(
    db: Pool,
    hand_over: HandOver,
    *,
    job_ids: Sequence[str] | None = None,
    function: str | None = None,
    id_prefix: str | None = None,
    job_id: str | None = None,
    limit: int = 10_000,
) -> int:
    """Retry failed jobs: those of `job_ids`, or else every failed job matching the filters
    (function, id prefix, exact id), oldest first, at most `limit`. Returns how many were
    retried (a job that stopped being failed meanwhile is skipped)."""
    if job_ids is None:
        name, params = _failed_ids_query(function, id_prefix, job_id)
        found = await get_many(db, name, {**params, "limit": limit})
        job_ids = [r["job_id"] for r in found]
    retried = 0
    for start in range(0, len(job_ids), RETRY_CHUNK):
        chunk = job_ids[start : start + RETRY_CHUNK]
        rows = await retry_jobs(db, hand_over, chunk)
        retried += sum(1 for r in rows if r["previous"] == "failed" and r["status"] == "queued")
    return retried


async def _hand_over(db: Pool, hand_over: HandOver, rows: list[dict[str, Any]]) -> None:
    """arq forgets the earlier runs, then takes the jobs like submissions. Redis away: the
    dispatcher delivers them (it also drops an earlier run's result: RETRY_KWARG)."""
    try:
        await clear_for_rerun(hand_over.arq, [r["job_id"] for r in rows])
    except QueueUnavailable as exc:
        log.warning("%d jobs retried in the ledger; the dispatcher delivers: %s", len(rows), exc)
    # In the job's own priority's queue, and not before its run_at (a run_at in the past: at
    # once), as the dispatcher would deliver it (retry_jobs returns both, V10).
    jobs: list[Submission] = [
        Submission(
            r["job_id"],
            r["function"],
            traced(
                {**(r["params"] or {}), RETRY_KWARG: retry_marker(r["enqueued_at"])},
                traceparent(r["trace_id"], r["span_id"]),
            ),
            r["run_at"],
            r["priority"] or "default",
        )
        for r in rows
    ]
    hand_over.add(db, jobs)


def _failed_ids_query(
    function: str | None, id_prefix: str | None, job_id: str | None
) -> tuple[str, dict[str, Any]]:
    """The named statement of these filters (one per combination: db/queries.py says why) and
    its parameters. An exact id wins over a prefix."""
    params: dict[str, Any] = {}
    name = "job.failed_ids"
    if job_id is not None:
        name, params["job_id"] = name + "_exact", job_id
    elif id_prefix:
        name, params["prefix"] = name + "_prefix", _escape_like(id_prefix) + "%"
    if function:
        name, params["function"] = name + "_of", function
    return name, params


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
