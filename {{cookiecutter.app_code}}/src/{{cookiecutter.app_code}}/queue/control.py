"""Changing what arq keeps of a job: cancelling it (out of its queue, or arq's abort), clearing
earlier runs before a retry, forgetting finished jobs, giving back a try."""

from __future__ import annotations

from collections.abc import Sequence

import redis.exceptions
from arq.connections import ArqRedis
from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.utils import timestamp_ms

from .connection import QueueUnavailable
from .names import all_queues


async def forget_result(arq: ArqRedis, job_id: str) -> None:
    """Drop what arq keeps of a finished job (its result, try count, any abort request) so it
    can be delivered again and run from its first try."""
    async with arq.pipeline(transaction=False) as pipe:
        pipe.delete(result_key_prefix + job_id, retry_key_prefix + job_id)
        pipe.zrem(abort_jobs_ss, job_id)
        await pipe.execute()


# Clear arq's traces of a job's earlier runs before it runs again under its id: its result
# and try count always; an abort request only when no worker still holds a run of it (a
# cancelled run still stopping must stop).
CLEAR_FOR_RERUN = """
for i, id in ipairs(ARGV) do
  redis.call('DEL', KEYS[1] .. id, KEYS[2] .. id)
  if redis.call('EXISTS', KEYS[3] .. id) == 0 then
    redis.call('ZREM', KEYS[4], id)
  end
end
return #ARGV
"""


async def clear_for_rerun(arq: ArqRedis, job_ids: Sequence[str]) -> None:
    """Make arq accept `job_ids` again (see CLEAR_FOR_RERUN); raises QueueUnavailable."""
    keys = [result_key_prefix, retry_key_prefix, in_progress_key_prefix, abort_jobs_ss]
    try:
        await arq.eval(CLEAR_FOR_RERUN, len(keys), *keys, *job_ids)  # type: ignore[misc]
    except (OSError, redis.exceptions.RedisError) as exc:
        raise QueueUnavailable(f"Redis did not clear the jobs' earlier runs: {exc}") from exc


async def drop_queued(arq: ArqRedis, queue_name: str, job_id: str) -> None:
    """A cancelled job that has not started: out of the queue, its definition gone, so no
    worker claims it (one that claimed it already finds the ledger's cancel)."""
    try:
        async with arq.pipeline(transaction=True) as pipe:
            for queue in all_queues(queue_name):  # whichever priority's queue holds it
                pipe.zrem(queue, job_id)
            pipe.delete(job_key_prefix + job_id)
            await pipe.execute()
    except (OSError, redis.exceptions.RedisError) as exc:
        raise QueueUnavailable(f"Redis did not drop the job: {exc}") from exc


async def abort(arq: ArqRedis, job_id: str) -> None:
    """Ask the worker running `job_id` to cancel it (arq's Job.abort, without waiting): each
    worker reads arq's abort set every poll and cancels the runs it holds."""
    try:
        await arq.zadd(abort_jobs_ss, {job_id: timestamp_ms()})
    except (OSError, redis.exceptions.RedisError) as exc:
        raise QueueUnavailable(f"Redis did not take the abort: {exc}") from exc


async def forget_jobs(arq: ArqRedis, job_ids: list[str], batch: int = 500) -> int:
    """Drop what arq keeps of finished jobs (definition, result, try counter); returns how
    many keys there were."""
    prefixes = (job_key_prefix, result_key_prefix, retry_key_prefix)
    keys = [prefix + job_id for job_id in job_ids for prefix in prefixes]
    deleted = 0
    for start in range(0, len(keys), batch):
        deleted += await arq.delete(*keys[start : start + batch])
    return deleted


async def give_back_try(arq: ArqRedis, job_id: str) -> None:
    """Undo the try arq counted when this run started: the run did not get to start the job
    (the ledger was unreachable), so it must not count against WORKER_MAX_TRIES."""
    if await arq.decr(retry_key_prefix + job_id) < 0:
        await arq.delete(retry_key_prefix + job_id)
