"""Submission: commit first, deliver after.

The ledger row commits before anything else happens, so a `202` means the job is durable and
will run. Handing it to Redis afterwards is only the fast path: if Redis is down, slow or
loses it, the dispatcher (ledger/dispatch.py) delivers it from the ledger. So an answer never
depends on Redis: `503` means PostgreSQL could not commit the row.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from ..core.config import Settings
from ..core.metrics import submitted
from ..core.tracing import current_ids, current_traceparent
from ..db import DatabaseUnavailable, execute_one, get_one
from ..db.pool import Pool
from ..queue import ArqRedis, QueueUnavailable, deliver
from .dispatch import channel

log = logging.getLogger(__name__)

# After Redis failed a hand-over, submissions skip it this long (the dispatcher delivers), so
# an outage costs one request REDIS_TIMEOUT, not every request.
SKIP_REDIS_AFTER_FAILURE_S = 2.0


class DuplicateJob(Exception):
    """The job id is in the ledger already: refused for good, whatever Redis holds."""

    def __init__(self, job_id: str, status: str | None) -> None:
        self.job_id, self.status = job_id, status
        super().__init__(f"job id {job_id!r} already exists (status: {status or 'unknown'})")


class HandOver:
    """The API process's fast path to Redis, with a short memory of Redis failing."""

    def __init__(self, arq: ArqRedis, settings: Settings) -> None:
        self.arq = arq
        self.settings = settings
        self._skip_until = 0.0

    async def __call__(
        self,
        db: Pool,
        job_id: str,
        function: str,
        params: dict[str, Any],
        traceparent: str | None = None,
    ) -> None:
        """Hand the committed job to Redis, or wake the dispatchers to do it."""
        if time.monotonic() >= self._skip_until:
            try:
                await deliver(
                    self.arq, self.settings, job_id, function, params, traceparent=traceparent
                )
                return  # queued (or already queued by a dispatcher)
            except QueueUnavailable as exc:
                self._skip_until = time.monotonic() + SKIP_REDIS_AFTER_FAILURE_S
                log.warning("%s; the dispatcher delivers from the ledger", exc)
        # Without PostgreSQL either, the dispatchers' periodic sweep finds the row all the same.
        with contextlib.suppress(DatabaseUnavailable):
            await execute_one(db, "dispatch.wake", {"channel": channel(self.settings)})


async def submit(
    db: Pool,
    hand_over: HandOver,
    job_id: str,
    function: str,
    params: dict[str, Any],
) -> dict[str, Any]:
    """Record the job in the ledger (the commit is the acceptance), then deliver it.

    Raises DuplicateJob for an id the ledger holds (with its real status), and
    DatabaseUnavailable when the row could not be committed.
    """
    trace = current_ids()  # the request's span: the job's run is its child (core/tracing.py)
    trace_id, span_id = trace if trace else (None, None)
    try:
        row = await get_one(
            db,
            "job.insert",
            {
                "job_id": job_id,
                "function": function,
                "params": Jsonb(params),
                "source": "api",
                "trace_id": trace_id,
                "span_id": span_id,
            },
        )
    except psycopg.errors.UniqueViolation:
        raise DuplicateJob(job_id, await status(db, job_id)) from None
    assert row is not None
    await hand_over(db, job_id, function, params, current_traceparent())
    submitted(function)
    return row


async def status(db: Pool, job_id: str) -> str | None:
    row = await get_one(db, "job.get", {"job_id": job_id})
    return None if row is None else str(row["status"])
