"""The only package that talks to arq (besides worker/claim.py, which replaces one method of
arq's Worker): reaching Redis, the serializer, delivery, reading and changing what arq holds
for a job, and how the worker registers its functions and cron jobs.

Keeping arq behind this package means a later swap (SAQ, taskiq) touches one folder. It
decides nothing about a job: the ledger (the `ledger` package) does, and uses these verbs,
imported from here; each module below holds one concern.
"""

from arq import Retry as RunAgain
from arq.connections import ArqRedis, RedisSettings
from arq.cron import CronJob
from arq.typing import WorkerCoroutine as JobCoroutine
from arq.worker import Function

from .codec import deserialize, serialize, serialize_fast
from .connection import (
    QueueUnavailable,
    RideOut,
    client,
    connect,
    redis_ok,
    redis_settings,
    where,
)
from .control import abort, clear_for_rerun, drop_queued, forget_jobs, forget_result, give_back_try
from .delivery import Held, Holding, Submission, deliver, deliver_many, holdings, requeue
from .names import (
    PRIORITIES,
    RETRY_KWARG,
    TRACE_KWARG,
    Priority,
    all_queues,
    due_at,
    queue_for,
    retry_marker,
    traced,
    turns_key,
)
from .registry import cron_job, job_function, next_run
from .waiting import waiting

# arq's types are re-exported for the packages that reach arq only through this one: the Redis
# client's type, a job coroutine's type, arq's Retry (run the job again), the worker settings'.
__all__ = [
    "PRIORITIES",
    "RETRY_KWARG",
    "TRACE_KWARG",
    "ArqRedis",
    "CronJob",
    "Function",
    "Held",
    "Holding",
    "JobCoroutine",
    "Priority",
    "QueueUnavailable",
    "RedisSettings",
    "RideOut",
    "RunAgain",
    "Submission",
    "abort",
    "all_queues",
    "clear_for_rerun",
    "client",
    "connect",
    "cron_job",
    "deliver",
    "deliver_many",
    "deserialize",
    "drop_queued",
    "due_at",
    "forget_jobs",
    "forget_result",
    "give_back_try",
    "holdings",
    "job_function",
    "next_run",
    "queue_for",
    "redis_ok",
    "redis_settings",
    "requeue",
    "retry_marker",
    "serialize",
    "serialize_fast",
    "traced",
    "turns_key",
    "waiting",
    "where",
]
