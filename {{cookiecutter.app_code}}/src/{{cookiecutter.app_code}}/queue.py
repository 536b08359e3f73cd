"""The only module that talks to arq: the Redis pool, the serializer, delivery, reading what
arq holds for a job, and how the worker registers its functions and cron jobs.

Keeping arq behind this module means a later swap (SAQ, taskiq) touches one file (and
worker/claim.py, which replaces one method of arq's Worker). It decides nothing about a job:
the ledger (the `ledger` package) does, and uses these verbs.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal, NamedTuple, TypeVar, cast

import orjson
import redis.exceptions
from arq import Retry as RunAgain
from arq import cron, func
from arq.connections import ArqRedis, RedisSettings
from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.cron import CronJob, next_cron
from arq.jobs import DeserializationError, deserialize_result, serialize_job
from arq.typing import WorkerCoroutine as JobCoroutine
from arq.utils import timestamp_ms
from arq.worker import Function
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff

from .core.config import Settings

# The job's trace context (a W3C traceparent) rides beside its params under this key, which no
# params model can declare (a leading underscore); the worker takes it out before the params.
TRACE_KWARG = "_traceparent"
# A job run again by a retry (POST .../retry) carries the retry's time (retry_marker) under
# this key, so that arq's result of an earlier run (same id) is told from the retry's own.
RETRY_KWARG = "_retry"


def retry_marker(enqueued_at: datetime) -> str:
    """What a retried job's runs carry: the ledger's enqueued_at of the retry, in UTC."""
    return enqueued_at.astimezone(UTC).isoformat()


T = TypeVar("T")

# Re-exported for the packages that reach arq only through this module: the Redis client's
# type, a job coroutine's type, arq's Retry (run the job again), and the worker settings' types.
__all__ = ["ArqRedis", "CronJob", "Function", "JobCoroutine", "RedisSettings", "RunAgain"]


Priority = Literal["high", "default", "low"]
# The claim reads the queues in this order (worker/claim.py); `default` is arq's own queue.
PRIORITIES: tuple[Priority, ...] = ("high", "default", "low")


def queue_for(queue_name: str, priority: str) -> str:
    """The sorted set of one priority: arq's queue for `default` (where claimed jobs of every
    priority also wait while they run), `<queue>:high` and `<queue>:low` for the others."""
    return queue_name if priority == "default" else f"{queue_name}:{priority}"


def all_queues(queue_name: str) -> list[str]:
    """Every priority's queue, in the order the claim reads them."""
    return [queue_for(queue_name, priority) for priority in PRIORITIES]


# A priority's place in all_queues (Lua counts from 1): ENQUEUE_IF_NEW's last argument a job.
QUEUE_INDEX: dict[str, int] = {priority: n + 1 for n, priority in enumerate(PRIORITIES)}


def turns_key(queue_name: str) -> str:
    """The claim's turn counter (worker/claim.py: every FAIR_EVERY-th claim is a fair turn)."""
    return f"{queue_name}:turns"


def due_at(enqueued_at: datetime, run_at: datetime | None) -> datetime:
    """When a job may start: its run_at if later than its enqueue time, else the enqueue time
    (its place in first-in-first-out order)."""
    return run_at if run_at is not None and run_at > enqueued_at else enqueued_at


class QueueUnavailable(RuntimeError):
    """Redis cannot be reached or refused the job; callers answer 503."""


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def serialize(obj: Any) -> bytes:
    """JSON, not arq's default pickle: whoever can write to Redis must not run code here."""
    return json.dumps(obj, default=_json_default, separators=(",", ":")).encode()


def serialize_fast(obj: Any) -> bytes:
    """`serialize` with orjson (a tenth of the API's CPU a batch job went to the standard
    library's encoder), for the hand-over's payloads: their params committed to jsonb first, so
    they hold no NaN, which orjson would write as null. What orjson refuses (an integer beyond
    64 bits) goes through `serialize`. Either way plain JSON that `deserialize` reads."""
    try:
        return orjson.dumps(obj, default=_json_default)
    except orjson.JSONEncodeError:
        return serialize(obj)


def deserialize(data: bytes) -> Any:
    return json.loads(data)


# The worker rides out a Redis outage of any length: a reconnect is retried with backoff (0.1 s
# doubling to 1 s) for as long as it takes (-1: no limit), and so is a command that fails
# mid-way, instead of arq's main loop dying on the first ConnectionError. Meanwhile its jobs
# wait, and submissions wait in the ledger. A wrong password at start is not retried.
WORKER_REDIS_RETRIES = -1
# A connect to a host cut off the network fails with one of these (no exception type names
# them), after the ARP or route lookup gives up; they are retried like a refused connect.
UNREACHABLE = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN})


class RideOut(Retry):
    """redis-py's Retry, which also retries a connect that found no route to Redis' host.

    redis-py retries only the exception types it is given, and "no route to host" is a bare
    OSError (a TLS error is one too, and must not be retried): here it becomes the
    ConnectionError it means, by its errno. Measured in the template's multi-host test: without
    it, a worker whose host lost its link died at its first command to Redis.
    """

    async def call_with_retry(
        self, do: Callable[[], Awaitable[T]], fail: Callable[[Any], Any]
    ) -> T:
        async def attempt() -> T:
            try:
                return await do()
            except OSError as exc:
                if exc.errno in UNREACHABLE:
                    raise redis.exceptions.ConnectionError(str(exc)) from exc
                raise

        return await super().call_with_retry(attempt, fail)


def redis_settings(settings: Settings) -> RedisSettings:
    """The worker's Redis settings (arq builds its pool from them).

    With REDIS_SENTINELS, arq asks the sentinels for the master and connects to it with the
    password and TLS settings; it passes neither to the sentinels themselves, nor the retry
    and timeout options below (arq 0.28), so a worker that loses its master exits and its
    supervisor restarts it.
    """
    server: dict[str, Any] = (
        {
            "host": settings.redis_sentinel_hosts,
            "sentinel": True,
            "sentinel_master": settings.redis_sentinel_master,
        }
        if settings.redis_sentinels
        else {"host": settings.redis_host, "port": settings.redis_port}
    )
    return RedisSettings(
        **server,
        ssl=settings.redis_ssl,
        ssl_ca_certs=settings.redis_ssl_ca_certs,
        # A certificate must name the host we asked for (a sentinel's answer is an address).
        ssl_check_hostname=settings.redis_ssl and not settings.redis_sentinels,
        password=settings.redis_password.get_secret_value(),
        database=settings.redis_db,
        conn_timeout=max(1, round(settings.redis_timeout)),
        conn_retries=1,
        conn_retry_delay=0,
        retry=RideOut(ExponentialBackoff(cap=1.0, base=0.1), WORKER_REDIS_RETRIES),
        retry_on_error=[
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            ConnectionRefusedError,
            ConnectionResetError,
            # A connect that times out (Redis' host cut off the network: no refusal, no answer)
            # raises the built-in TimeoutError inside redis-py's retry: without it here, the
            # worker died at its first command once Redis had been unreachable for conn_timeout.
            TimeoutError,
        ],
    )


def job_function(run: JobCoroutine, name: str, timeout_s: float) -> Function:
    """A function the worker runs when a job of `name` is delivered."""
    return func(run, name=name, timeout=timeout_s)


def cron_job(
    run: JobCoroutine,
    name: str,
    when: Mapping[str, set[int] | None],
    *,
    at_startup: bool,
    timeout_s: float,
    keep_result_s: float,
) -> CronJob:
    """A job the worker runs on the schedule `when` (core.cron.parse_cron's fields); its runs
    get the ids `<name>:<run ms>`. Several workers run each tick once (`unique`), and a worker
    that was cut off from Redis through several ticks enqueues each of them when it is back
    (arq 0.28): the result kept `keep_result_s` refuses the ones another worker ran meanwhile,
    which with arq's default (no result kept) ran again (the template's tests/test_hosts.py)."""
    return cron(
        run,
        name=name,
        run_at_startup=at_startup,
        unique=True,
        timeout=timeout_s,
        keep_result=keep_result_s,
        **when,  # type: ignore[arg-type]
    )


def next_run(when: Mapping[str, set[int] | None], after: datetime) -> datetime:
    """When arq runs a cron job of schedule `when` next after `after` (in after's timezone:
    arq evaluates cron fields in the worker's system timezone)."""
    return next_cron(after, **when)  # type: ignore[arg-type]


def client(settings: Settings) -> ArqRedis:
    """The API's Redis client; connects on first use, so it is made even while Redis is down.

    Unlike the worker's, it never waits for Redis: a connect or a command that takes longer than
    REDIS_TIMEOUT fails, so a request answers 503 at once instead of hanging. The pool reconnects
    by itself on the next command once Redis is back. With REDIS_SENTINELS it asks the
    sentinels where the master is (again after a failover), like the worker.
    """
    options: dict[str, Any] = {
        "password": settings.redis_password.get_secret_value(),
        "db": settings.redis_db,
        "socket_connect_timeout": settings.redis_timeout,
        "socket_timeout": settings.redis_timeout,
    }
    if settings.redis_ssl:
        options.update(
            ssl=True,
            ssl_ca_certs=settings.redis_ssl_ca_certs,
            ssl_check_hostname=not settings.redis_sentinels,
        )
    if settings.redis_sentinels:
        # The sentinels get the timeouts only (no password, no TLS), as arq gives the worker.
        sentinel = Sentinel(settings.redis_sentinel_hosts, **options)  # type: ignore[no-untyped-call]
        arq = sentinel.master_for(str(settings.redis_sentinel_master), redis_class=ArqRedis)
        assert isinstance(arq, ArqRedis)
        arq.job_serializer, arq.job_deserializer = serialize, deserialize
        arq.default_queue_name = settings.queue_name
        return arq
    return ArqRedis(
        host=settings.redis_host,
        port=settings.redis_port,
        **options,
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=settings.queue_name,
    )


async def connect(settings: Settings) -> ArqRedis:
    """`client`, checked with a PING: raises QueueUnavailable when Redis does not answer."""
    arq = client(settings)
    if not await redis_ok(arq):
        await arq.aclose()
        raise QueueUnavailable(
            f"cannot connect to {where(settings)} within {settings.redis_timeout:g} s"
        )
    return arq


def where(settings: Settings) -> str:
    """Which Redis the settings point at, for messages: a server, or a Sentinel master."""
    place = (
        f"the master {settings.redis_sentinel_master!r} of the sentinels {settings.redis_sentinels}"
        if settings.redis_sentinels
        else f"Redis at {settings.redis_host}:{settings.redis_port}"
    )
    tls = " over TLS (REDIS_SSL=true; is REDIS_SSL_CA_CERTS right?)" if settings.redis_ssl else ""
    return place + tls


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


def traced(params: dict[str, Any], traceparent: str | None) -> dict[str, Any]:
    """The params a job is delivered with: its own, and the trace its run joins."""
    return {**params, TRACE_KWARG: traceparent} if traceparent else params


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


async def redis_ok(arq: ArqRedis) -> bool:
    try:
        return bool(await arq.ping())
    except (OSError, redis.exceptions.RedisError):
        return False
