"""The dispatcher: makes Redis match the ledger.

A job exists once its ledger row commits. The API then hands it to Redis at once (the fast
path), but Redis may lose it: a crash loses up to a second of writes, a failover to an empty
replica or a FLUSHALL everything, and keys expire. So every worker process runs a dispatcher;
one of them at a time (a PostgreSQL advisory lock, held by its connection) walks the rows that
are not finished and compares each with what arq holds for it:

- arq holds it (queued, or claimed by a worker): nothing to do;
- arq holds nothing (or only "job expired"): an API job is delivered again under its own id, at
  its old place in its priority's queue (a delayed one no earlier than its run_at); a cron run
  is settled `failed` (the next tick runs anyway);
- arq holds a job key but no queue entry and no claim: the entry is put back;
- arq finished it and the ledger does not say so (the worker could not record the end, or
  arq gave up after WORKER_MAX_TRIES): the ledger is settled with arq's outcome;
- arq's result is of a run before the job was retried (POST .../retry; the run's RETRY_KWARG
  is not the row's retry_marker): it is dropped and the job delivered again.

A cancelled row is finished: it is never delivered again.

Most unfinished rows are simply waiting in their queue (always, while a backlog drains), so a
sweep first reads which ids wait in arq's queues with their job key (queue/waiting.py, a few
script calls) and the unfinished rows' ids (one query), and checks one by one only the rows
whose id did not wait (`Dispatcher.sweep` says why that is as safe as checking them all).

It sweeps every SWEEP_EVERY_S, and at once when the API says (NOTIFY) that it could not hand
a job over. Delivery is arq's own idempotent enqueue, so two dispatchers, or a dispatcher and
the API, can never queue a job twice; settling never overwrites an end a worker recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import redis.exceptions
from psycopg.types.json import Jsonb

from ..core.config import Settings
from ..core.tracing import traceparent
from ..db import get_many, put_many
from ..db.pool import Pool, Role, conninfo
from ..queue import (
    RETRY_KWARG,
    ArqRedis,
    Held,
    Holding,
    QueueUnavailable,
    deliver,
    due_at,
    forget_result,
    holdings,
    queue_for,
    requeue,
    retry_marker,
    waiting,
)
from .writer import DB_ERRORS

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 2.0
# A sweep costs in proportion to the rows it must check one by one (`holdings`: five Redis
# reads each, the row read in full, maybe an enqueue): the rows whose job waits in its queue
# cost ~1 us each (`waiting`, one array of ids from the ledger). A sweep of 20,000 waiting
# batch jobs took ~2.8 s of the worker process's CPU when every row was checked, ~20 ms now.
# The rows to check are many only when Redis lost many jobs (a FLUSHALL, a failover to an empty
# replica): then the work is real, and the next periodic sweep waits at least this many times
# as long as the last one took, so the dispatcher keeps under ~1/(1 + factor) of its process
# while the worker runs what it delivered; a cheap sweep is still repeated every SWEEP_EVERY_S.
SWEEP_PAUSE_FACTOR = 10.0
# A periodic sweep leaves rows younger than this to the API's own hand-over (it is in flight:
# the row commits before the job reaches Redis, so a young row missing from the queues is
# usually not lost; checking it would race the hand-over for nothing).
MIN_AGE_S = 1.0
# Rows read in full and checked one by one (`holdings`) at a time.
PAGE = 500
# A sweep walks at most this many unfinished rows; the next one goes on from the start.
MAX_ROWS_PER_SWEEP = 50_000
RECONNECT_CAP_S = 5.0


def channel(settings: Settings) -> str:
    """The LISTEN/NOTIFY channel the API uses to wake the dispatchers."""
    return f"{settings.app_code}_dispatch"


class Act(enum.Enum):
    NOTHING = "nothing"
    DELIVER = "deliver"  # enqueue again under its own id
    FORGET_AND_DELIVER = "forget_and_deliver"  # drop arq's "job expired", then deliver
    REQUEUE = "requeue"  # put the job key's id back in the queue
    SUCCEEDED = "succeeded"  # settle with arq's result
    FAILED = "failed"  # settle with arq's (or our) reason


@dataclass(frozen=True)
class Decision:
    act: Act
    detail: Any = None  # SUCCEEDED: the result; FAILED: the reason


def decide(source: str, holding: Holding, marker: str | None = None) -> Decision:
    """What to do about one unfinished ledger row, from what arq holds for it (`marker`: the
    row's retry_marker, which its runs carry; None for a row never retried)."""
    if holding.held is Held.QUEUED:
        return Decision(Act.NOTHING)
    if holding.held is Held.ORPHAN:
        return Decision(Act.REQUEUE)
    if holding.held is Held.FINISHED and holding.retry != marker:
        return Decision(Act.FORGET_AND_DELIVER)  # an earlier run's result: run the retry
    if holding.held is Held.FINISHED and not holding.expired:
        if holding.success:
            return Decision(Act.SUCCEEDED, holding.outcome)
        return Decision(Act.FAILED, f"arq gave up on the job: {holding.outcome}")
    # Redis forgot it (or its keys expired before a worker ran it).
    if source == "cron":
        return Decision(
            Act.FAILED,
            "lost: Redis forgot this cron run before it finished; the next tick runs as usual",
        )
    return Decision(Act.FORGET_AND_DELIVER if holding.expired else Act.DELIVER)


@dataclass
class Sweep:
    """What one sweep saw and did (logged when it did anything)."""

    rows: int = 0
    waiting: int = 0  # rows whose job waited in its queue (`waiting`): not checked one by one
    delivered: int = 0
    requeued: int = 0
    settled: int = 0

    def __bool__(self) -> bool:
        return bool(self.delivered or self.requeued or self.settled)


class Dispatcher:
    """One per worker process: `run_forever` as a task, cancelled at shutdown."""

    def __init__(self, settings: Settings, db: Pool, arq: ArqRedis) -> None:
        self.settings = settings
        self.db = db
        self.arq = arq
        self.sweeps = 0

    async def run_forever(self) -> None:
        failures = 0
        while True:
            try:
                await self._listen_and_sweep()
            except (*DB_ERRORS, QueueUnavailable, OSError, redis.exceptions.RedisError) as exc:
                failures += 1
                wait = min(RECONNECT_CAP_S, 0.25 * 2**failures)
                log.warning("dispatcher: %s; again in %.1f s", _short(exc), wait)
                await asyncio.sleep(wait)
            else:
                failures = 0

    async def _listen_and_sweep(self) -> None:
        """LISTEN on a connection of its own, which also holds the leader's advisory lock:
        when this process dies the connection closes, and another dispatcher takes over."""
        async with await psycopg.AsyncConnection.connect(
            conninfo(self.settings, Role.DATA), autocommit=True
        ) as conn:
            await conn.execute(f'LISTEN "{channel(self.settings)}"')
            leader = False
            woken = False
            while True:
                if not leader:
                    cur = await conn.execute(
                        "SELECT pg_try_advisory_lock(hashtext(%s)) AS got",
                        [channel(self.settings)],
                    )
                    row = await cur.fetchone()
                    leader = bool(row and row[0])
                took = 0.0
                if leader:
                    began = time.monotonic()
                    await self.sweep(min_age_s=0.0 if woken else MIN_AGE_S)
                    took = time.monotonic() - began
                woken = False
                async for _ in conn.notifies(timeout=pause_after(took), stop_after=1):
                    woken = True

    async def sweep(self, min_age_s: float = MIN_AGE_S) -> Sweep:
        """Make Redis and the ledger agree for the unfinished rows (the oldest
        MAX_ROWS_PER_SWEEP): those whose job waits in its queue at once, the rest one by one.

        First what waits in arq's queues (`waiting`: ids whose job key exists), then the
        unfinished rows' ids. A row whose id waited in its own priority's queue or arq's (where
        claimed jobs wait) is what `holdings` calls QUEUED, and `decide` does nothing for it:
        it is neither read in full nor checked again. Why that is as safe as the check:

        - The snapshot is taken before the ledger is read, so it shows arq as it was a little
          earlier than a check of the row would have (by at most this sweep's duration). A
          change in that window (arq finished the job and the worker could not record the
          end, Redis lost it, a retry replaced it) is acted on by the next sweep (pause_after)
          instead of this one, as a change just after a row's check always was: the
          guarantees stand, and only changes within that window wait one sweep longer.
        - The snapshot claims nothing `holdings` would not: an entry whose job key is gone (a
          worker would find no job) is not in it, nor is a job key with no entry (an orphan).
        - Whatever the snapshot left out (a job handed over after it, the entries beyond
          WAITING_MAX, entries the queues' churn between chunks hid) gets the full check,
          as every row did before: omissions cost CPU, never an action.
        - A cancelled row is finished: it is neither read nor delivered.
        """
        self.sweeps += 1
        seen = Sweep()
        queue = self.settings.queue_name
        in_queue = await waiting(self.arq, queue)
        groups = await get_many(
            self.db,
            "dispatch.unfinished",
            {"min_age_s": min_age_s, "limit": MAX_ROWS_PER_SWEEP},
        )
        check: list[str] = []
        for group in groups:  # one a priority, its ids oldest first
            ids: list[str] = group["job_ids"]
            seen.rows += len(ids)
            own = in_queue[queue_for(queue, group["priority"])]
            # Set operations (C code): a loop over the ids only when some did not wait.
            if missing := set(ids).difference(own, in_queue[queue]):
                check += [i for i in ids if i in missing]
        seen.waiting = seen.rows - len(check)
        for start in range(0, len(check), PAGE):
            page = {"job_ids": check[start : start + PAGE]}
            await self._reconcile(await get_many(self.db, "dispatch.unfinished_rows", page), seen)
        if seen:
            log.warning(
                "dispatcher: %d unfinished jobs checked (%d waiting in their queue): %d "
                "delivered again (Redis had lost them), %d put back in the queue, %d settled "
                "from arq's outcome",
                seen.rows,
                seen.waiting,
                seen.delivered,
                seen.requeued,
                seen.settled,
            )
        return seen

    async def _reconcile(self, rows: list[dict[str, Any]], seen: Sweep) -> None:
        """Check each row with `holdings` (five reads a row, one round trip) and act."""
        if not rows:
            return
        queue = self.settings.queue_name
        held = await holdings(self.arq, queue, [(r["job_id"], r["priority"]) for r in rows])
        settle_ok: list[dict[str, Any]] = []
        settle_failed: list[dict[str, Any]] = []
        for row in rows:
            job_id = row["job_id"]
            decision = decide(row["source"], held[job_id], _marker(row))
            if decision.act is Act.SUCCEEDED:
                settle_ok.append({"job_id": job_id, "result": Jsonb(decision.detail)})
            elif decision.act is Act.FAILED:
                settle_failed.append({"job_id": job_id, "error": decision.detail})
            elif decision.act is Act.REQUEUE:
                due = due_at(row["enqueued_at"], row["run_at"])
                await requeue(self.arq, queue_for(queue, row["priority"]), job_id, due)
                seen.requeued += 1
            elif decision.act in (Act.DELIVER, Act.FORGET_AND_DELIVER):
                if decision.act is Act.FORGET_AND_DELIVER:
                    await forget_result(self.arq, job_id)
                seen.delivered += await self._deliver(row)
        if settle_ok:
            seen.settled += await put_many(self.db, "dispatch.settle_succeeded", settle_ok)
        if settle_failed:
            seen.settled += await put_many(self.db, "dispatch.settle_failed", settle_failed)

    async def _deliver(self, row: dict[str, Any]) -> int:
        enqueued_at: datetime = row["enqueued_at"]
        params = row["params"] if isinstance(row["params"], dict) else {}
        marker = _marker(row)
        if marker is not None:
            params = {**params, RETRY_KWARG: marker}
        return int(
            await deliver(
                self.arq,
                self.settings,
                row["job_id"],
                row["function"],
                params,
                enqueued_at=enqueued_at,
                traceparent=traceparent(row.get("trace_id"), row.get("span_id")),
                run_at=row["run_at"],
                priority=row["priority"],
            )
        )


def _marker(row: dict[str, Any]) -> str | None:
    """The retry_marker a retried row's runs carry (None: never retried)."""
    return None if row.get("tries_base") is None else retry_marker(row["enqueued_at"])


def pause_after(took: float) -> float:
    """Seconds until the next periodic sweep, after one that took `took` seconds (a NOTIFY
    from the API still wakes the dispatcher at once)."""
    return max(SWEEP_EVERY_S, SWEEP_PAUSE_FACTOR * took)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


async def stop(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
