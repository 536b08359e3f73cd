"""Handing jobs to arq (one, or many in one round trip) and reading what arq holds for them:
the dispatcher's verbs for making Redis match the ledger."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

import redis.exceptions
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix
from arq.jobs import DeserializationError, deserialize_result, serialize_job
from arq.utils import timestamp_ms

from ..core.config import Settings
from .codec import deserialize, serialize_fast
from .connection import QueueUnavailable, where
from .names import QUEUE_INDEX, RETRY_KWARG, TRACE_KWARG, all_queues, queue_for


class Held(enum.Enum):
    """What arq holds for one job id (see `holdings`)."""

    QUEUED = "queued"  # a job key, in the queue or claimed by a worker
    ORPHAN = "orphan"  # a job key, but neither queued nor claimed: it would never run
    FINISHED = "finished"  # no job key; arq kept the job's result
    NOTHING = "nothing"  # no trace: Redis never had it, or forgot it


@dataclass(frozen=True)
class Holding:
    held: Held
    success: bool | None = None  # FINISHED: how arq's run ended
    outcome: Any = None  # FINISHED: the job's return value, or the error as text
    expired: bool = False  # FINISHED: arq found the job key gone when it came to run it
    retry: str | None = None  # FINISHED: the run's RETRY_KWARG (None: not a retry's run)


async def deliver(
    arq: ArqRedis,
    settings: Settings,
    job_id: str,
    function: str,
    params: dict[str, Any],
    *,
    enqueued_at: datetime | None = None,
    traceparent: str | None = None,
    run_at: datetime | None = None,
    priority: str = "default",
) -> bool:
    """Enqueue the job under its own id; False when arq already holds it (or its result).

    arq's own check (WATCH, then EXISTS on the job and result keys) makes this safe to call
    any number of times, from any process: a job is queued at most once. `enqueued_at` (a
    job delivered again) keeps its place in the first-in-first-out order. `traceparent`: the
    trace the job's run joins (TRACE_KWARG). `run_at`: no worker claims it earlier (arq's
    `_defer_until`, the queue score); `priority`: the queue it goes to (`queue_for`).
    """
    now = datetime.now(UTC)
    due = None if enqueued_at is None else min(enqueued_at, now)
    if run_at is not None and run_at > (due or now):
        due = run_at
    # arq's job key must outlive the wait: KEY_TTL_SECONDS after the job is due.
    wait_s = 0.0 if due is None else max(0.0, (due - now).total_seconds())
    if traceparent:
        params = {**params, TRACE_KWARG: traceparent}
    try:
        job = await arq.enqueue_job(
            function,
            _job_id=job_id,
            _expires=settings.key_ttl_seconds + wait_s,
            _defer_until=due,
            _queue_name=queue_for(settings.queue_name, priority),
            **params,
        )
    except (OSError, redis.exceptions.RedisError) as exc:
        raise QueueUnavailable(f"{where(settings)} did not take the job: {exc}") from exc
    return job is not None


# arq's enqueue_job for many jobs as one step on the Redis side (one command a hand-over: a
# command a job cost the API a fifth of its CPU a batch job in redis-py's packing): an id arq
# holds (its job or result key) is left alone, as enqueue_job leaves it; otherwise the job key
# is written (the payload serialize_job makes) and the id queued in its priority's queue at its
# score (the enqueue time, or a later run_at).
# KEYS: the high, default and low queues (PRIORITIES), then each job's job key and result key;
# ARGV: each job's payload, id, score, expiry (ms) and queue (1 to 3).
ENQUEUE_IF_NEW = """
local queued = 0
for i = 0, (#KEYS - 3) / 2 - 1 do
  local job, result = KEYS[4 + 2 * i], KEYS[5 + 2 * i]
  if redis.call('EXISTS', job, result) == 0 then
    redis.call('PSETEX', job, ARGV[4 + 5 * i], ARGV[1 + 5 * i])
    redis.call('ZADD', KEYS[tonumber(ARGV[5 + 5 * i])], ARGV[3 + 5 * i], ARGV[2 + 5 * i])
    queued = queued + 1
  end
end
return queued
"""
ENQUEUE_IF_NEW_SHA = hashlib.sha1(ENQUEUE_IF_NEW.encode()).hexdigest()  # noqa: S324 (Redis' name)


class Submission(NamedTuple):
    """A job to hand to Redis: its params carry TRACE_KWARG too."""

    job_id: str
    function: str
    params: dict[str, Any]
    run_at: datetime | None = None  # not claimed before (None: at once)
    priority: str = "default"


async def deliver_many(arq: ArqRedis, settings: Settings, jobs: Sequence[Submission]) -> int:
    """Enqueue every Submission under its own id in one round trip; returns how many were
    queued (ids arq holds already are skipped, as `deliver` skips them). A job with a later
    run_at is scored at it (arq's `_defer_until`): the claim takes only due entries."""
    if not jobs:
        return 0
    now = timestamp_ms()
    expires_ms = settings.key_ttl_seconds * 1000
    keys = all_queues(settings.queue_name)
    args: list[Any] = []
    for job_id, function, params, run_at, priority in jobs:
        score = now if run_at is None else max(now, int(run_at.timestamp() * 1000))
        keys += (job_key_prefix + job_id, result_key_prefix + job_id)
        payload = serialize_job(function, (), params, None, now, serializer=serialize_fast)
        args += (payload, job_id, score, expires_ms + score - now, QUEUE_INDEX[priority])

    def enqueue() -> Awaitable[Any]:  # redis-py types evalsha for its sync client too
        return cast(Awaitable[Any], arq.evalsha(ENQUEUE_IF_NEW_SHA, len(keys), *keys, *args))

    try:
        try:
            return int(await enqueue())
        except redis.exceptions.NoScriptError:
            await arq.script_load(ENQUEUE_IF_NEW)  # Redis restarted, or flushed scripts
            return int(await enqueue())
    except (OSError, redis.exceptions.RedisError) as exc:
        raise QueueUnavailable(f"{where(settings)} did not take {len(jobs)} jobs: {exc}") from exc


async def holdings(
    arq: ArqRedis, queue_name: str, jobs: Sequence[tuple[str, str]]
) -> dict[str, Holding]:
    """What arq holds for each (id, priority), read in one round trip: its entry is in its
    priority's queue, or in arq's (default) queue once claimed."""
    async with arq.pipeline(transaction=False) as pipe:
        for job_id, priority in jobs:
            pipe.exists(job_key_prefix + job_id)
            pipe.exists(in_progress_key_prefix + job_id)
            pipe.zscore(queue_name, job_id)
            pipe.zscore(queue_for(queue_name, priority), job_id)
            pipe.get(result_key_prefix + job_id)
        answers = await pipe.execute()
    found: dict[str, Holding] = {}
    for n, (job_id, _) in enumerate(jobs):
        job, running, score, own_score, result = answers[5 * n : 5 * n + 5]
        if job:
            queued = running or score is not None or own_score is not None
            found[job_id] = Holding(Held.QUEUED if queued else Held.ORPHAN)
        elif result is not None:
            found[job_id] = _finished(result)
        else:
            found[job_id] = Holding(Held.NOTHING)
    return found


def _finished(raw: bytes) -> Holding:
    try:
        info = deserialize_result(raw, deserializer=deserialize)
    except DeserializationError:
        return Holding(Held.FINISHED, success=False, outcome="arq's result could not be read")
    # arq's run_job: a job whose key was gone when a worker came to run it.
    expired = not info.success and info.function == "<unknown>"
    retry = info.kwargs.get(RETRY_KWARG) if isinstance(info.kwargs, dict) else None
    return Holding(
        Held.FINISHED,
        success=info.success,
        outcome=info.result,
        expired=expired,
        retry=retry if isinstance(retry, str) else None,
    )


async def requeue(arq: ArqRedis, queue: str, job_id: str, due: datetime) -> None:
    """Put an orphan (job key, no queue entry) back in its queue, at its old place (`due`)."""
    await arq.zadd(queue, {job_id: int(due.timestamp() * 1000)}, nx=True)
