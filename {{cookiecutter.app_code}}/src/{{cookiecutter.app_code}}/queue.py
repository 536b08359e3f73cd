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
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from psycopg.types.json import Jsonb

from .core.config import Settings
from .db import DatabaseUnavailable, get_one
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


def redis_settings(settings: Settings) -> RedisSettings:
    return RedisSettings(
        host=settings.redis_host,
        port=settings.redis_port,
        password=settings.redis_password.get_secret_value(),
        database=settings.redis_db,
        conn_timeout=max(1, round(settings.redis_timeout)),
        conn_retries=1,
        conn_retry_delay=0,
    )


async def connect(settings: Settings) -> ArqRedis:
    """The arq Redis pool, with the JSON serializer and the service's queue as default."""
    try:
        return await create_pool(
            redis_settings(settings),
            job_serializer=serialize,
            job_deserializer=deserialize,
            default_queue_name=settings.queue_name,
        )
    except (OSError, redis.exceptions.RedisError) as exc:
        raise QueueUnavailable(
            f"cannot connect to Redis at {settings.redis_host}:{settings.redis_port}: {exc}"
        ) from exc


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
        async with db.connection() as conn, conn.transaction():
            try:
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
            except psycopg.errors.UniqueViolation:
                raise DuplicateJob(job_id, await _status(db, job_id)) from None
            try:
                job = await arq.enqueue_job(
                    function, _job_id=job_id, _expires=settings.key_ttl_seconds, **params
                )
            except (OSError, redis.exceptions.RedisError) as exc:
                raise QueueUnavailable(f"Redis refused the job: {exc}") from exc
            if job is None:  # arq still holds keys for this id
                raise DuplicateJob(job_id, "queued")
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"PostgreSQL is unavailable: {exc}") from exc
    assert row is not None
    return row


async def _status(db: Pool, job_id: str) -> str | None:
    row = await get_one(db, "job.get", {"job_id": job_id})
    return None if row is None else str(row["status"])


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
