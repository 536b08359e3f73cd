"""Wraps every job so the ledger follows it: in_progress, then succeeded or failed.

arq's hooks see only ctx (no function name, params, result or exception), so the bookkeeping
lives in a wrapper around each registered function instead. Each write is durable before the
job goes on: the row is `in_progress` before the work starts, and final before arq marks the
job done.

PostgreSQL away is not the job's fault, so it never costs the job a try:
- the start cannot be recorded: the job waits for the ledger (START_PATIENCE_S), then goes
  back to the queue at its old place with its try given back;
- the job's own queries fail while the ledger is away: the same;
- the end cannot be recorded: the job waits (END_PATIENCE_S), then hands its outcome to arq,
  whose result the dispatcher (ledger/dispatch.py) records once PostgreSQL is back.
Each wait ends before arq's timeout for the run would cancel it (ARQ_TIMEOUT_MARGIN_S).

Job control (ledger/control.py): a job cancelled before its start is not run (the start
statement fails: JobCancelled); one cancelled while running is cancelled by arq's abort, and
its end is not recorded over the cancel. An ordinary exception is retried as the job's
RetryPolicy says (arq's Retry with a defer), while arq's try is below WORKER_MAX_TRIES.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import psycopg
from opentelemetry.trace import SpanKind
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from ..core.config import Settings
from ..core.logging import job_scope
from ..core.tracing import context_of, current_ids, tracer
from ..db.pool import dead_link_timeout
from ..jobs import JobSpec, job_source
from ..jobs.base import Ctx
from ..queue import RETRY_KWARG, TRACE_KWARG, JobCoroutine, RunAgain, give_back_try
from .writer import DB_ERRORS, LedgerWriter

log = logging.getLogger(__name__)
_TRACER = tracer(__name__)

# How long a claimed job waits for an unreachable ledger before it goes back to the queue. The
# worker claims nothing meanwhile, so a longer outage leaves the rest in the queue, untouched.
START_PATIENCE_S = 10.0
# How long a finished job waits to record its end before it leaves that to the dispatcher.
END_PATIENCE_S = 30.0
# A job whose own queries fail while the ledger is reachable retries with this backoff.
BACKOFF_CAP_S = 30
# arq's timeout for a run is WORKER_JOB_TIMEOUT + this (worker/settings.py); a run it cancels
# ends failed, without a retry. So every wait for the ledger ends before it, by at least one
# attempt to write (db.pool.dead_link_timeout) and a second to put the job back: a longer
# outage puts the job back, or leaves its end to the dispatcher, as above. Found across hosts
# (the template's tests/test_hosts.py): jobs mid-run when PostgreSQL's link went ended `failed`.
ARQ_TIMEOUT_MARGIN_S = 5


def arq_timeout(settings: Settings) -> int:
    """The timeout arq gives each run of a job (and the worker's in-progress key: + 10 s)."""
    return settings.worker_job_timeout + ARQ_TIMEOUT_MARGIN_S


def backoff(job_try: int) -> float:
    """Seconds before the next try of a job whose own database work failed: 1, 2, 4 ... 30."""
    return float(min(BACKOFF_CAP_S, 2 ** max(0, job_try - 1)))


class JobCancelled(Exception):
    """The job was cancelled before this run could start: it is not run (nor retried)."""


def ledger_writer(ctx: Ctx) -> LedgerWriter:
    """The worker's writer (made by on_startup; made here when a test runs a job without it)."""
    writer = ctx.get("ledger")
    if writer is None:
        writer = ctx["ledger"] = LedgerWriter(ctx["db"])
    assert isinstance(writer, LedgerWriter)
    return writer


async def _put_back(ctx: Ctx, why: str) -> RunAgain:
    """The run did not get to do the job: back to the queue, at its old place, try given back."""
    log.warning("job %s: %s; back to the queue (no try used)", ctx["job_id"], why)
    await give_back_try(ctx["redis"], ctx["job_id"])
    return RunAgain(defer=None)


def tracked(spec: JobSpec) -> JobCoroutine:
    """The coroutine arq runs for `spec`: validates params, records the job, runs it.

    The run is a span, child of the submitting request's (the job's traceparent), and its
    end is reported to the worker's metrics (`ctx["metrics"]`, worker/metrics.py)."""

    async def run(ctx: Ctx, *args: Any, **raw: Any) -> Any:
        if args:
            raise TypeError(f"{spec.name} takes keyword params only, got {len(args)} positional")
        parent = context_of(raw.pop(TRACE_KWARG, None))
        raw.pop(RETRY_KWARG, None)  # the dispatcher's marker (queue/names.py), not a param
        job_id: str = ctx["job_id"]
        attributes = {"job.id": job_id, "job.function": spec.name, "job.try": ctx["job_try"]}
        with (
            job_scope(job_id),
            _TRACER.start_as_current_span(
                f"job {spec.name}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
            ),
            _outcome(ctx, spec.name),
        ):
            return await _tracked(ctx, spec, raw)

    run.__name__ = run.__qualname__ = spec.name
    return run


@contextlib.contextmanager
def _outcome(ctx: Ctx, function: str) -> Iterator[None]:
    """Reports the run's end and its queue wait to the worker's metrics, when it has them."""
    metrics = ctx.get("metrics")
    if metrics is None:
        yield
        return
    enqueued: datetime = ctx["enqueue_time"]
    metrics.waited(time.time() - enqueued.timestamp())
    started = time.perf_counter()
    outcome = "interrupted"
    try:
        yield
        outcome = "succeeded"
    except RunAgain:
        outcome = "retried"
        raise
    except JobCancelled:
        outcome = "cancelled"
        raise
    except Exception:
        outcome = "failed"
        raise
    finally:
        metrics.ran(function, outcome, time.perf_counter() - started)


async def _tracked(ctx: Ctx, spec: JobSpec, raw: dict[str, Any]) -> Any:
    """Records the start, runs the job, records the end."""
    job_id: str = ctx["job_id"]
    ledger = ledger_writer(ctx)
    left = _time_left(ctx["settings"])
    trace = current_ids()
    try:
        started = await ledger.write_patiently(
            "job.start",
            {
                "job_id": job_id,
                "function": spec.name,
                "params": Jsonb(raw),
                "source": job_source(job_id),
                "tries": ctx["job_try"],
                "enqueued_at": ctx["enqueue_time"],
                "worker_id": ctx["worker_id"],
                "trace_id": trace[0] if trace else None,
            },
            within=left(START_PATIENCE_S),
        )
    except psycopg.errors.RaiseException as exc:
        if exc.diag.message_hint != "job_cancelled":
            raise
        log.info("job %s: cancelled before it started; not run", job_id)
        raise JobCancelled(f"job {job_id} was cancelled before it started") from None
    if not started:
        raise await _put_back(ctx, "PostgreSQL unavailable, the start was not recorded")
    result = await _run(ctx, spec, ledger, raw, left)
    recorded = await ledger.write_patiently(
        "job.succeed", {"job_id": job_id, "result": Jsonb(result)}, within=left(END_PATIENCE_S)
    )
    if not recorded:
        log.warning("job %s: succeeded; PostgreSQL away, the dispatcher records it", job_id)
    ctx["stats"]["done"] += 1
    return result


def _time_left(settings: Settings) -> Callable[[float], float]:
    """`patience`, cut to what is left before arq would cancel this run (see
    ARQ_TIMEOUT_MARGIN_S); 0 when nothing is."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + arq_timeout(settings) - dead_link_timeout(settings) - 1.0

    def left(patience: float) -> float:
        return max(0.0, min(patience, ends - loop.time()))

    return left


async def _run(
    ctx: Ctx,
    spec: JobSpec,
    ledger: LedgerWriter,
    raw: dict[str, Any],
    left: Callable[[float], float],
) -> Any:
    """The job itself; a failure is recorded (or left to the dispatcher) and re-raised."""
    job_id: str = ctx["job_id"]
    try:
        params = spec.params.model_validate(raw)
        async with asyncio.timeout(ctx["settings"].worker_job_timeout):
            return await spec.run(ctx, params)
    except asyncio.CancelledError:
        # The worker is shutting down: arq puts the job back in the queue. (A job cancelled
        # through the API, arq's abort, is `cancelled` already: job.requeue leaves it alone.)
        await asyncio.shield(
            _record(ledger, "job.requeue", job_id, "interrupted by shutdown", "interrupted")
        )
        raise
    except DB_ERRORS as exc:
        ledger.lost(exc)
        if not await ledger.wait_available(left(START_PATIENCE_S)):
            raise await _put_back(ctx, f"PostgreSQL unavailable ({exc})") from exc
        # The ledger answers: the job's own database work failed. A try, with backoff.
        log.warning("job %s: database error (%s); retrying", job_id, exc)
        await _record(ledger, "job.requeue", job_id, f"database error: {exc}")
        raise RunAgain(defer=backoff(ctx["job_try"])) from exc
    except RunAgain as exc:
        await _record(ledger, "job.requeue", job_id, repr(exc))
        raise
    except Exception as exc:
        again = _retry_delay(ctx, spec, exc)
        if again is not None:
            log.warning("job %s: %r; retry in %.2f s (its retry policy)", job_id, exc, again)
            await _record(ledger, "job.requeue", job_id, _describe(exc))
            raise RunAgain(defer=again) from exc
        ctx["stats"]["failed"] += 1
        if not await ledger.write_patiently(
            "job.fail", {"job_id": job_id, "error": _describe(exc)}, within=left(END_PATIENCE_S)
        ):
            log.warning("job %s: failed; PostgreSQL unavailable, the dispatcher records it", job_id)
        raise


def _retry_delay(ctx: Ctx, spec: JobSpec, exc: Exception) -> float | None:
    """Seconds before the next run of a job whose run raised `exc`, or None: fail for good.

    The policy's retries count arq's tries of this delivery (a retry through the API starts
    again at 1), and never beyond WORKER_MAX_TRIES: arq would refuse that run anyway."""
    policy = spec.retry
    job_try: int = ctx["job_try"]
    if isinstance(exc, ValidationError) or not policy.retries_on(exc):
        return None
    if job_try > policy.retries or job_try >= ctx["settings"].worker_max_tries:
        return None
    return policy.delay(job_try)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return f"invalid params: {exc}"
    if isinstance(exc, TimeoutError):
        return "timed out (WORKER_JOB_TIMEOUT)\n" + "".join(traceback.format_exception(exc))
    return "".join(traceback.format_exception(exc))


async def _record(
    ledger: LedgerWriter, name: str, job_id: str, error: str, outcome: str = "retrying"
) -> None:
    """Best effort: a status hint (back to `queued`, the attempt's end) must not hide the
    job's own outcome; the next start overwrites it anyway."""
    try:
        await ledger.write(name, {"job_id": job_id, "error": error, "outcome": outcome})
    except DB_ERRORS as exc:
        ledger.lost(exc)
        log.warning("job %s: could not record %s: %s", job_id, name, exc)
