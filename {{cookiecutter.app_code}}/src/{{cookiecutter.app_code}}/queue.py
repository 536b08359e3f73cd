"""The only module that talks to arq: the Redis pool, the serializer, submission, key listing.

Keeping arq behind this module means a later swap (SAQ, taskiq) touches one file.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import redis.exceptions
from arq.connections import ArqRedis, RedisSettings
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix
from arq.jobs import DeserializationError, deserialize_result
from psycopg.types.json import Jsonb
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff

from .core.config import Settings
from .db import DatabaseUnavailable, get_one
from .db.helpers import Conn
from .db.pool import Pool


class QueueUnavailable(RuntimeError):
    """Redis cannot be reached or refused the job; callers answer 503."""


class DuplicateJob(Exception):
    """The job id is taken: by the ledger (for good) or by arq's own keys."""

    def __init__(self, job_id: str, status: str | None) -> None:
        self.job_id, self.status = job_id, status
        super().__init__(f"job id {job_id!r} already exists (status: {status or 'unknown'})")


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


def deserialize(data: bytes) -> Any:
    return json.loads(data)


# The worker rides out a Redis restart: a reconnect is retried with backoff (0.2 s doubling to
# 1 s) for about a minute, and so is a command that fails mid-way, instead of arq's main loop
# dying on the first ConnectionError. A longer outage still stops the worker (its supervisor
# restarts it). A wrong password at start is not retried.
WORKER_REDIS_RETRIES = 60


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
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), WORKER_REDIS_RETRIES),
        retry_on_error=[
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            ConnectionRefusedError,
            ConnectionResetError,
        ],
    )


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


async def submit(
    db: Pool,
    arq: ArqRedis,
    settings: Settings,
    job_id: str,
    function: str,
    params: dict[str, Any],
) -> dict[str, Any]:
    """Record the job in the ledger and enqueue it, both or neither.

    The ledger row is inserted in a transaction that commits only after Redis accepted the
    job: if Redis refuses, nothing stays behind. The primary key refuses a reused id even after
    its Redis keys expired; arq's own check refuses one whose keys still exist.
    """
    try:
        async with db.connection() as conn:
            try:
                async with conn.transaction():
                    row = await get_one(
                        conn,
                        "job.insert",
                        {
                            "job_id": job_id,
                            "function": function,
                            "params": Jsonb(params),
                            "source": "api",
                        },
                    )
                    try:
                        job = await arq.enqueue_job(
                            function, _job_id=job_id, _expires=settings.key_ttl_seconds, **params
                        )
                    except (OSError, redis.exceptions.RedisError) as exc:
                        raise QueueUnavailable(f"Redis refused the job: {exc}") from exc
                    if job is None:  # arq still holds keys for this id
                        raise DuplicateJob(job_id, "queued")
            except psycopg.errors.UniqueViolation:
                # Asked on this connection (the insert is rolled back): taking a second one
                # while holding this would starve the pool under concurrent duplicates.
                raise DuplicateJob(job_id, await _status(conn, job_id)) from None
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"PostgreSQL is unavailable: {exc}") from exc
    assert row is not None
    return row


async def _status(db: Pool | Conn, job_id: str) -> str | None:
    row = await get_one(db, "job.get", {"job_id": job_id})
    return None if row is None else str(row["status"])


async def let_go(arq: ArqRedis, job_ids: list[str]) -> dict[str, str | None]:
    """The ids among `job_ids` that arq neither queues nor runs (no job key, no in-progress
    key), each with the outcome arq kept for it as text (its failed result, say "max 5
    retries exceeded"), or None when nothing of it is left in Redis."""
    async with arq.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.exists(job_key_prefix + job_id, in_progress_key_prefix + job_id)
            pipe.get(result_key_prefix + job_id)
        answers = await pipe.execute()
    gone: dict[str, str | None] = {}
    for job_id, held, result in zip(job_ids, answers[::2], answers[1::2], strict=True):
        if held:
            continue
        try:
            gone[job_id] = (
                None
                if result is None
                else str(deserialize_result(result, deserializer=deserialize).result)
            )
        except DeserializationError:
            gone[job_id] = None
    return gone


async def service_keys(arq: ArqRedis, settings: Settings, count: int = 500) -> AsyncIterator[str]:
    """Every Redis key of this service (arq's and ours), found with SCAN, never KEYS."""
    for pattern in ("arq:*", f"{settings.app_code}:*"):
        async for key in arq.scan_iter(match=pattern, count=count):
            yield key.decode() if isinstance(key, bytes) else str(key)


async def redis_ok(arq: ArqRedis) -> bool:
    try:
        return bool(await arq.ping())
    except (OSError, redis.exceptions.RedisError):
        return False
