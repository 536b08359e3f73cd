"""Submission: commit first, deliver after, off the request path.

The ledger row commits before anything else happens, so a `202` means the job is durable and
will run (concurrent submissions share one INSERT and its commit: ledger/group.py). The
answer does not wait for Redis: the API process hands accepted jobs to Redis in the
background (`HandOver`), every job that came in meanwhile in one round trip. If Redis is
down, slow or loses them, or the API process dies first, the dispatcher (ledger/dispatch.py)
delivers them from the ledger. So an answer never depends on Redis: `503` means PostgreSQL
could not commit the row.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from ..core.config import Settings
from ..core.metrics import submitted
from ..core.tracing import current_ids, current_traceparent
from ..db import DatabaseUnavailable, execute_one, get_many, get_one
from ..db.pool import Pool
from ..queue import ArqRedis, QueueUnavailable, Submission, deliver_many, traced
from .dispatch import channel
from .group import Row, Taken, group_of

log = logging.getLogger(__name__)

# After Redis failed a hand-over, the API skips it this long (the dispatcher delivers), so an
# outage costs one hand-over REDIS_TIMEOUT, not every one.
SKIP_REDIS_AFTER_FAILURE_S = 2.0
# Jobs handed to Redis in one round trip at the most.
HAND_OVER_MAX = 1000


class DuplicateJob(Exception):
    """The job id is in the ledger already: refused for good, whatever Redis holds."""

    def __init__(self, job_id: str, status: str | None) -> None:
        self.job_id, self.status = job_id, status
        super().__init__(f"job id {job_id!r} already exists (status: {status or 'unknown'})")


class HandOver:
    """The API process's fast path to Redis: committed jobs wait here for the next round trip.

    One background task delivers whatever has come in since its last round trip, so under
    load many jobs share one round trip and at light load a job goes at once. What it cannot
    deliver (Redis failing) it leaves to the dispatchers, which it wakes with a NOTIFY.
    """

    def __init__(self, arq: ArqRedis, settings: Settings) -> None:
        self.arq = arq
        self.settings = settings
        self._skip_until = 0.0
        self._pending: list[Submission] = []
        self._db: Pool | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, db: Pool, jobs: Sequence[Submission]) -> None:
        """Queue committed jobs for the next round trip (returns at once)."""
        self._pending.extend(jobs)
        self._db = db
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[:HAND_OVER_MAX]
                del self._pending[:HAND_OVER_MAX]
                try:
                    await self._deliver(batch)
                except Exception:  # the dispatcher delivers them; the next jobs still go
                    log.exception("hand-over of %d jobs to Redis failed", len(batch))

    async def _deliver(self, batch: list[Submission]) -> None:
        """Hand `batch` to Redis, or wake the dispatchers to do it."""
        if time.monotonic() >= self._skip_until:
            try:
                await deliver_many(self.arq, self.settings, batch)
                return
            except QueueUnavailable as exc:
                self._skip_until = time.monotonic() + SKIP_REDIS_AFTER_FAILURE_S
                log.warning("%s; the dispatcher delivers from the ledger", exc)
        # Without PostgreSQL either, the dispatchers' periodic sweep finds the rows all the same.
        if self._db is not None:
            with contextlib.suppress(DatabaseUnavailable):
                await execute_one(self._db, "dispatch.wake", {"channel": channel(self.settings)})

    async def aclose(self) -> None:
        """Deliver what is pending (at shutdown), then stop the task."""
        with contextlib.suppress(Exception):
            while self._pending:
                batch = self._pending[:HAND_OVER_MAX]
                del self._pending[:HAND_OVER_MAX]
                await self._deliver(batch)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def submit(
    db: Pool,
    hand_over: HandOver,
    job_id: str,
    function: str,
    params: dict[str, Any],
    run_at: datetime | None = None,
    priority: str = "default",
) -> dict[str, Any]:
    """Record the job in the ledger (the commit is the acceptance), then queue its delivery
    (for `run_at`, no earlier; in `priority`'s queue).

    Raises DuplicateJob for an id the ledger holds (with its real status), and
    DatabaseUnavailable when the row could not be committed.
    """
    trace = current_ids()  # the request's span: the job's run is its child (core/tracing.py)
    trace_id, span_id = trace if trace else (None, None)
    try:  # with the submissions that came in meanwhile, in one statement (ledger/group.py)
        row = await group_of(db).insert(
            Row(job_id, function, params, trace_id, span_id, run_at, priority)
        )
    except Taken as exc:
        raise DuplicateJob(job_id, exc.status) from None
    job = Submission(job_id, function, traced(params, current_traceparent()), run_at, priority)
    hand_over.add(db, [job])
    submitted(function)
    return row


@dataclass(frozen=True)
class Refused:
    """An id of a batch the ledger held already (status None: a concurrent submission's)."""

    status: str | None


async def submit_many(
    db: Pool, hand_over: HandOver, jobs: Sequence[Submission]
) -> dict[str, Refused | None]:
    """Record many jobs in one statement; each id maps to None (accepted) or Refused.

    The ids must be distinct. Accepted jobs are queued for delivery in one hand-over.
    """
    if not jobs:
        return {}
    trace = current_ids()  # one request, one trace: every job of the batch is its child
    trace_id, span_id = trace if trace else (None, None)
    rows = await get_many(
        db,
        "job.insert_many",
        {
            "jobs": Jsonb(
                [
                    {
                        "job_id": job.job_id,
                        "function": job.function,
                        "params": job.params,
                        "run_at": None if job.run_at is None else job.run_at.isoformat(),
                        "priority": job.priority,
                    }
                    for job in jobs
                ]
            ),
            "trace_id": trace_id,
            "span_id": span_id,
        },
    )
    outcome: dict[str, Refused | None] = {
        row["job_id"]: None if row["status"] is None else Refused(row["status"]) for row in rows
    }
    raced = [job.job_id for job in jobs if job.job_id not in outcome]
    if raced:  # committed by a concurrent submission while this statement ran
        found = await get_many(db, "job.statuses", {"job_ids": raced})
        statuses = {row["job_id"]: row["status"] for row in found}
        outcome.update({job_id: Refused(statuses.get(job_id)) for job_id in raced})
    accepted = [job for job in jobs if outcome[job.job_id] is None]
    traceparent = current_traceparent()
    hand_over.add(db, [job._replace(params=traced(job.params, traceparent)) for job in accepted])
    for function, n in collections.Counter(job.function for job in accepted).items():
        submitted(function, n)  # once a function, not once a job (9% of a batch's CPU)
    return outcome


async def status(db: Pool, job_id: str) -> str | None:
    row = await get_one(db, "job.get", {"job_id": job_id})
    return None if row is None else str(row["status"])
