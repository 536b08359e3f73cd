"""Wraps every job so the ledger follows it: in_progress, then succeeded or failed.

arq's hooks see only ctx (no function name, params, result or exception), so the bookkeeping
lives in a wrapper around each registered function instead.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from typing import Any

import psycopg
from arq import Retry
from arq.typing import WorkerCoroutine
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from ..db import DatabaseUnavailable, execute_one
from ..jobs import JobSpec
from ..jobs.base import Ctx

log = logging.getLogger(__name__)

DB_ERRORS = (DatabaseUnavailable, psycopg.OperationalError)


def backoff(job_try: int) -> float:
    """Seconds before the next try when PostgreSQL is away: 1, 2, 4, ... capped at 30."""
    return float(min(30, 2 ** max(0, job_try - 1)))


def tracked(spec: JobSpec) -> WorkerCoroutine:
    """The coroutine arq runs for `spec`: validates params, records the job, runs it."""

    async def run(ctx: Ctx, *args: Any, **raw: Any) -> dict[str, Any]:
        if args:
            raise TypeError(f"{spec.name} takes keyword params only, got {len(args)} positional")
        job_id: str = ctx["job_id"]
        tries: int = ctx["job_try"]
        db = ctx["db"]
        try:
            await execute_one(
                db,
                "job.start",
                {
                    "job_id": job_id,
                    "function": spec.name,
                    "params": Jsonb(raw),
                    "source": "cron" if job_id.startswith("cron:") else "api",
                    "tries": tries,
                    "enqueued_at": ctx["enqueue_time"],
                    "worker_id": ctx["worker_id"],
                },
            )
        except DB_ERRORS as exc:
            log.warning("job %s: PostgreSQL unavailable at start (%s); retrying", job_id, exc)
            raise Retry(defer=backoff(tries)) from exc

        try:
            params = spec.params.model_validate(raw)
            async with asyncio.timeout(ctx["settings"].worker_job_timeout):
                result = await spec.run(ctx, params)
        except asyncio.CancelledError:
            # The worker is shutting down: arq puts the job back in the queue.
            await asyncio.shield(
                _record(db, "job.requeue", job_id, error="interrupted by shutdown")
            )
            raise
        except DB_ERRORS as exc:
            log.warning("job %s: PostgreSQL unavailable (%s); retrying", job_id, exc)
            await _record(db, "job.requeue", job_id, error=f"PostgreSQL unavailable: {exc}")
            raise Retry(defer=backoff(tries)) from exc
        except Retry as exc:
            await _record(db, "job.requeue", job_id, error=repr(exc))
            raise
        except Exception as exc:
            error = _describe(exc)
            ctx["stats"]["failed"] += 1
            await _record(db, "job.fail", job_id, error=error)
            raise

        try:
            await execute_one(db, "job.succeed", {"job_id": job_id, "result": Jsonb(result)})
        except DB_ERRORS as exc:
            # The work is done but not recorded: run again (jobs are idempotent).
            raise Retry(defer=backoff(tries)) from exc
        ctx["stats"]["done"] += 1
        return result

    run.__name__ = run.__qualname__ = spec.name
    return run


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return f"invalid params: {exc}"
    if isinstance(exc, TimeoutError):
        return "timed out (WORKER_JOB_TIMEOUT)\n" + "".join(traceback.format_exception(exc))
    return "".join(traceback.format_exception(exc))


async def _record(db: Any, name: str, job_id: str, *, error: str) -> None:
    """Best effort: the ledger write must not hide the job's own outcome."""
    try:
        await execute_one(db, name, {"job_id": job_id, "error": error})
    except DB_ERRORS as exc:
        log.warning("job %s: could not record %s: %s", job_id, name, exc)
