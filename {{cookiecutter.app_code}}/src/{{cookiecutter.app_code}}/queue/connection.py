"""Reaching Redis: the worker's settings for arq's pool (riding out outages), the API's client
(never waiting), and how messages name the server."""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.exceptions
from arq.connections import ArqRedis, RedisSettings
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff

from ..core.config import Settings
from .codec import deserialize, serialize

T = TypeVar("T")


class QueueUnavailable(RuntimeError):
    """Redis cannot be reached or refused the job; callers answer 503."""


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


async def redis_ok(arq: ArqRedis) -> bool:
    try:
        return bool(await arq.ping())
    except (OSError, redis.exceptions.RedisError):
        return False
