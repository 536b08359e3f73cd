"""Wraps every job so the ledger follows it: in_progress, then succeeded or failed.

arq's hooks see only ctx (no function name, params, result or exception), so the bookkeeping
lives in a wrapper around each registered function instead.

The writes go through one `LedgerWriter` per worker, which commits the writes of concurrent
jobs together (group commit): one round trip and one WAL flush per batch instead of two per
job. Each job still awaits its own write, so its row is durable before the job goes on: it is
`in_progress` before the work starts, and `succeeded` before arq marks the job done.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Mapping
from typing import Any, LiteralString

import psycopg
from arq import Retry
from arq.typing import WorkerCoroutine
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from ..db import DatabaseUnavailable, query
from ..db.helpers import Conn, connection
from ..db.pool import Pool
from ..jobs import JobSpec
from ..jobs.base import Ctx

log = logging.getLogger(__name__)

DB_ERRORS = (DatabaseUnavailable, psycopg.OperationalError)


def backoff(job_try: int) -> float:
    """Seconds before the next try when PostgreSQL is away: 1, 2, 4, ... capped at 30."""
    return float(min(30, 2 ** max(0, job_try - 1)))


Write = tuple[LiteralString, Mapping[str, Any], "asyncio.Future[None]"]


class LedgerWriter:
    """Group commit for the ledger writes of one worker process.

    `write` queues a named statement and returns once it is committed. The writes of
    concurrent jobs go together: while one batch is in flight the next one fills up, and it
    goes as soon as the first is committed. There is no timer, so an idle worker's write goes
    at once: a linger would add to every job's latency twice (start and end), and 1-3 ms of
    it showed no gain in `make bench`. Jobs claimed together (worker/settings.py) write
    together: 4-5 writes per commit when draining no-op jobs.

    A batch is sent in pipeline mode on an autocommit connection (the pool's kind): every
    statement up to the pipeline's one Sync is a single implicit transaction, so the batch
    costs one round trip and one commit, and commits whole or not at all. The connection is
    kept while writes keep coming (and `hold` seconds after), so the pool's check runs once
    per busy spell, not once per batch.

    A batch that fails with PostgreSQL away fails every write in it (DatabaseUnavailable, and
    the jobs retry); any other error is retried write by write, so one bad value fails only
    its own job.
    """

    MAX_BATCH = 500

    def __init__(self, pool: Pool, *, hold: float = 0.5) -> None:
        self.pool = pool
        self.hold = hold
        self.batches = 0
        self.writes = 0
        self._pending: list[Write] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._flusher: asyncio.Task[None] | None = None

    async def write(self, name: str, params: Mapping[str, Any]) -> None:
        """Run the named statement; returns when it is committed (raises what it raised)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((query(name), params, done))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_all())
        else:
            self._wake.set()
        await done

    async def aclose(self) -> None:
        """Send what is queued and give the connection back (the worker's on_shutdown)."""
        self._closing = True
        self._wake.set()
        if self._flusher is not None:
            await asyncio.shield(self._flusher)

    async def _flush_all(self) -> None:
        batch: list[Write] = []
        try:
            while self._pending:
                try:
                    async with connection(self.pool) as conn:
                        while await self._next():
                            batch = self._pending[: self.MAX_BATCH]
                            del self._pending[: self.MAX_BATCH]
                            await self._flush(conn, batch)
                            batch = []
                except Exception as exc:
                    if batch:  # the batch failed as a whole
                        failed, batch = batch, []
                    else:  # no connection: every queued write fails the same way
                        failed, self._pending = self._pending, []
                    for _, _, done in failed:
                        if not done.done():
                            done.set_exception(exc)
        except BaseException:  # cancelled: no writer may wait for ever
            for _, _, done in batch + self._pending:
                done.cancel()
            self._pending.clear()
            raise
        finally:
            self._flusher = None

    async def _next(self) -> bool:
        """Wait for writes to send (True), or `hold` seconds without any (False)."""
        if not self._pending:
            if self._closing:
                return False
            self._wake.clear()
            try:
                async with asyncio.timeout(self.hold):
                    await self._wake.wait()
            except TimeoutError:
                return bool(self._pending)
        return True

    async def _flush(self, conn: Conn, batch: list[Write]) -> None:
        self.batches += 1
        self.writes += len(batch)
        try:
            await _commit(conn, [(sql, params) for sql, params, _ in batch])
        except DatabaseUnavailable:
            raise
        except Exception:
            if len(batch) == 1 or conn.broken or conn.closed:
                raise
            for sql, params, done in batch:  # find the bad write; the others commit
                try:
                    await _commit(conn, [(sql, params)])
                except Exception as exc:
                    if not done.done():
                        done.set_exception(exc)
                else:
                    if not done.done():
                        done.set_result(None)
            return
        for _, _, done in batch:
            if not done.done():  # a job cancelled meanwhile no longer waits
                done.set_result(None)


async def _commit(conn: Conn, writes: list[tuple[LiteralString, Mapping[str, Any]]]) -> None:
    """One pipeline, one transaction: runs of one statement go in one `executemany`.

    Errors come out as from `execute_one` (db.helpers.connection maps them).
    """
    assert conn.autocommit, "a pipeline is one implicit transaction only in autocommit mode"
    if len(writes) == 1:  # a pipeline costs more CPU than it saves for one statement
        async with connection(conn):
            await conn.execute(*writes[0])
        return
    async with connection(conn), conn.pipeline(), conn.cursor() as cur:
        start = 0
        while start < len(writes):
            sql = writes[start][0]
            end = start + 1
            while end < len(writes) and writes[end][0] == sql:
                end += 1
            await cur.executemany(sql, [params for _, params in writes[start:end]])
            start = end


def ledger_writer(ctx: Ctx) -> LedgerWriter:
    """The worker's writer (made by on_startup; made here when a test runs a job without it)."""
    writer = ctx.get("ledger")
    if writer is None:
        writer = ctx["ledger"] = LedgerWriter(ctx["db"])
    assert isinstance(writer, LedgerWriter)
    return writer


def tracked(spec: JobSpec) -> WorkerCoroutine:
    """The coroutine arq runs for `spec`: validates params, records the job, runs it."""

    async def run(ctx: Ctx, *args: Any, **raw: Any) -> dict[str, Any]:
        if args:
            raise TypeError(f"{spec.name} takes keyword params only, got {len(args)} positional")
        job_id: str = ctx["job_id"]
        tries: int = ctx["job_try"]
        ledger = ledger_writer(ctx)
        try:
            await ledger.write(
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
                _record(ledger, "job.requeue", job_id, error="interrupted by shutdown")
            )
            raise
        except DB_ERRORS as exc:
            log.warning("job %s: PostgreSQL unavailable (%s); retrying", job_id, exc)
            await _record(ledger, "job.requeue", job_id, error=f"PostgreSQL unavailable: {exc}")
            raise Retry(defer=backoff(tries)) from exc
        except Retry as exc:
            await _record(ledger, "job.requeue", job_id, error=repr(exc))
            raise
        except Exception as exc:
            error = _describe(exc)
            ctx["stats"]["failed"] += 1
            await _record(ledger, "job.fail", job_id, error=error)
            raise

        try:
            await ledger.write("job.succeed", {"job_id": job_id, "result": Jsonb(result)})
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


async def _record(ledger: LedgerWriter, name: str, job_id: str, *, error: str) -> None:
    """Best effort: the ledger write must not hide the job's own outcome."""
    try:
        await ledger.write(name, {"job_id": job_id, "error": error})
    except DB_ERRORS as exc:
        log.warning("job %s: could not record %s: %s", job_id, name, exc)
