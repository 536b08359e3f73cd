"""Submission: commit first, deliver after, off the request path.

The ledger row commits before anything else happens, so a `202` means the job is durable and
will run (concurrent submissions share one INSERT and its commit: ledger/group.py). The
answer does not wait for Redis: the API process hands accepted jobs to Redis in the
background (`HandOver`), every job that came in meanwhile in one round trip; a round trip
Redis fails is tried again after a short back-off on a fresh connection. If Redis loses them,
stays away, or the API process dies first, the dispatcher (ledger/dispatch.py) delivers them
from the ledger. So an answer never depends on Redis: `503` means PostgreSQL
could not commit the row.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
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

# Jobs handed to Redis in one round trip at the most.
HAND_OVER_MAX = 1000
# A hand-over Redis failed is tried again, on a fresh connection, after 0.1 s, then twice as
# long each time up to 1 s (the worker's own reconnect back-off) for as long as Redis fails:
# about one connect a second while it is away, never a busy loop.
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 1.0
# Jobs the API keeps for Redis while it fails, at the most; beyond that the oldest are left to
# the dispatcher (they are in the ledger), so an outage of any length costs bounded memory.
KEEP_MAX = 10_000
# While Redis fails: a warning at the first failure, then one every this many seconds.
FAILING_LOG_EVERY_S = 30.0


class DuplicateJob(Exception):
    """The job id is in the ledger already: refused for good, whatever Redis holds."""

    def __init__(self, job_id: str, status: str | None) -> None:
        self.job_id, self.status = job_id, status
        super().__init__(f"job id {job_id!r} already exists (status: {status or 'unknown'})")


@dataclass
class _Failing:
    """A run of failed hand-overs: since when, how many tries, when last logged."""

    since: float
    tries: int = 0
    logged: float = 0.0
    left: int = 0  # jobs left to the dispatcher (beyond KEEP_MAX)


# Why jobs were left to the dispatcher (`HandOver.left_total`, `<app>_hand_over_left_total`).
LEFT_KEEP_MAX = "keep_max"  # Redis failed while more than KEEP_MAX waited: the oldest
LEFT_ERROR = "error"  # the hand-over failed for a reason not Redis' (a bug)
LEFT_SHUTDOWN = "shutdown"  # the API stopped while Redis did not take them
LEFT_REASONS = (LEFT_KEEP_MAX, LEFT_ERROR, LEFT_SHUTDOWN)


class HandOver:
    """The API process's fast path to Redis: committed jobs wait here for the next round trip.

    One background task delivers whatever has come in since its last round trip, so under
    load many jobs share one round trip and at light load a job goes at once. A round trip
    Redis fails (down, restarted, slow) is tried again after a short back-off on a fresh
    connection, with the jobs committed meanwhile; the jobs leave this queue only once Redis
    has answered for them. The dispatchers are the safety net: woken (NOTIFY) when a run of
    failures starts, they deliver from the ledger whatever the API does not (its process dies,
    more than KEEP_MAX jobs wait, Redis stays away).

    What it keeps count of (`waiting`, `oldest_age`, `failed_total`, `left_total`) the API
    exports as metrics (api/observe.py reads them every 2 s and at each scrape), so the path
    of a job that goes through costs no metric call.
    """

    def __init__(self, arq: ArqRedis, settings: Settings) -> None:
        self.arq = arq
        self.settings = settings
        self._pending: list[Submission] = []
        self._failing: _Failing | None = None
        # When the oldest waiting job was accepted, or earlier (None: none waits).
        self._since: float | None = None
        self.failed_total = 0  # tries Redis failed, since the process started
        self.left_total = dict.fromkeys(LEFT_REASONS, 0)  # jobs left to the dispatcher
        self._db: Pool | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Committed jobs this process has not handed to Redis yet."""
        return len(self._pending)

    @property
    def failed_tries(self) -> int:
        """Tries Redis failed since the hand-over last worked (0: it works)."""
        return 0 if self._failing is None else self._failing.tries

    def oldest_age(self) -> float:
        """Seconds the oldest waiting job has waited, at most (0: none waits). Overstated by
        at most one round trip: after one, the jobs that came in meanwhile count from its start.
        """
        since = self._since
        return 0.0 if since is None else time.monotonic() - since

    def add(self, db: Pool, jobs: Sequence[Submission]) -> None:
        """Queue committed jobs for the next round trip (returns at once)."""
        if not self._pending:
            self._since = time.monotonic()
        self._pending.extend(jobs)
        self._db = db
        if self._task is None or self._task.done():
            # A context of its own: not the trace of the request that happened to start it.
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._run(), context=contextvars.Context())
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[:HAND_OVER_MAX]
                taken = time.monotonic(), len(batch) == len(self._pending)
                try:
                    await deliver_many(self.arq, self.settings, batch)
                except QueueUnavailable as exc:  # kept: tried again with what comes meanwhile
                    await self._failed(exc)
                    continue
                except Exception:  # not Redis' doing (a bug): the dispatcher delivers them
                    log.exception(
                        "hand-over of %d jobs to Redis failed; the dispatcher delivers them "
                        "from the ledger",
                        len(batch),
                    )
                    self._done(len(batch), *taken)
                    self.left_total[LEFT_ERROR] += len(batch)
                    await self._wake_dispatchers()
                    continue
                self._done(len(batch), *taken)
                self._recovered()

    def _done(self, n: int, taken_at: float, whole: bool) -> None:
        """The `n` jobs at the head, taken at `taken_at` (`whole`: all that waited), are gone.
        What waits still came in after `taken_at` when the batch was `whole`, else it is older
        than that and the oldest's time stands."""
        del self._pending[:n]  # add() only appends: still the head
        if not self._pending:
            self._since = None
        elif whole:
            self._since = taken_at

    async def _failed(self, exc: QueueUnavailable) -> None:
        """Log, wake the dispatchers when failures start (or jobs are left to them), keep at
        most KEEP_MAX jobs, drop the idle connections (dead ones after a restart: the next try
        connects afresh), then wait the back-off."""
        now = time.monotonic()
        first = self._failing is None
        failing = self._failing = self._failing or _Failing(since=now)
        failing.tries += 1
        self.failed_total += 1
        delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** min(failing.tries - 1, 16))
        over = len(self._pending) - KEEP_MAX
        first_left = over > 0 and not failing.left
        if over > 0:  # the oldest: the dispatcher puts them at their place in the queue
            del self._pending[:over]
            failing.left += over
            self.left_total[LEFT_KEEP_MAX] += over
        if first or first_left or now - failing.logged >= FAILING_LOG_EVERY_S:
            failing.logged = now
            log.warning(
                "hand-over to Redis failed (try %d, failing for %.1f s): %s; %d committed "
                "jobs wait in the API, which tries again in %.1f s on a fresh connection (the "
                "pause grows to %g s while Redis fails; it keeps %d jobs at the most: %d left "
                "to the dispatcher so far); the ledger keeps them all, and the dispatcher "
                "delivers what the API does not",
                failing.tries,
                now - failing.since,
                exc,
                len(self._pending),
                delay,
                RETRY_MAX_S,
                KEEP_MAX,
                failing.left,
            )
        if first or over > 0:
            await self._wake_dispatchers()
        with contextlib.suppress(Exception):  # the failed connection is closed already
            await self.arq.connection_pool.disconnect(inuse_connections=False)
        await asyncio.sleep(delay)

    def _recovered(self) -> None:
        if self._failing is not None:
            log.info(
                "hand-over to Redis works again after %d failed tries over %.1f s (%d jobs "
                "were left to the dispatcher)",
                self._failing.tries,
                time.monotonic() - self._failing.since,
                self._failing.left,
            )
            self._failing = None

    async def _wake_dispatchers(self) -> None:
        """NOTIFY: the dispatchers sweep the ledger now. Without PostgreSQL either, their
        periodic sweep finds the rows all the same."""
        if self._db is not None:
            with contextlib.suppress(DatabaseUnavailable):
                await execute_one(self._db, "dispatch.wake", {"channel": channel(self.settings)})

    async def aclose(self) -> None:
        """Stop the task, then hand what is pending to Redis, one try (at shutdown): what
        Redis does not take the dispatcher delivers from the ledger."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._pending:
            batch = self._pending[:HAND_OVER_MAX]
            try:
                await deliver_many(self.arq, self.settings, batch)
            except Exception as exc:  # shutting down: the ledger has them
                log.warning(
                    "at shutdown, %d committed jobs not handed to Redis (%s): the dispatcher "
                    "delivers them from the ledger",
                    len(self._pending),
                    exc,
                )
                self.left_total[LEFT_SHUTDOWN] += len(self._pending)
                self._pending.clear()
                self._since = None
                await self._wake_dispatchers()
                return
            del self._pending[: len(batch)]
        self._since = None


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
