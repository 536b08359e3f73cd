"""The worker's Redis retry: a host cut off the network is waited for, a TLS error is not.

Measured across hosts by the template's tests/test_hosts.py, where a worker whose link went
down died at its first command to Redis ("No route to host", a connect timeout): redis-py
retries only the exception types it is given.
"""

from __future__ import annotations

import asyncio
import errno
import ssl

import pytest
from redis.backoff import NoBackoff

from {{ cookiecutter.app_code }}.core.config import Settings
from {{ cookiecutter.app_code }}.queue import RideOut, redis_settings


def attempts(error: OSError, fail_times: int) -> tuple[object, int]:
    """Run a connect that raises `error` `fail_times` times, through the worker's retry."""
    calls = 0

    async def connect() -> str:
        nonlocal calls
        calls += 1
        if calls <= fail_times:
            raise error
        return "connected"

    async def failed(_: object) -> None:
        return None

    settings = redis_settings(Settings(_env_file=None, redis_password="r" * 20))
    retry = settings.retry
    assert isinstance(retry, RideOut)
    retry = RideOut(NoBackoff(), -1)  # the same class, without the backoff's sleeps
    retry.update_supported_errors(settings.retry_on_error or [])
    return asyncio.run(retry.call_with_retry(connect, failed)), calls


@pytest.mark.parametrize("code", [errno.EHOSTUNREACH, errno.ENETUNREACH])
def test_no_route_to_the_host_is_retried_until_it_connects(code: int) -> None:
    assert attempts(OSError(code, "unreachable"), 5) == ("connected", 6)


def test_a_connect_timeout_is_retried_until_it_connects() -> None:
    assert attempts(TimeoutError(), 5) == ("connected", 6)


def test_a_tls_error_is_not_retried() -> None:
    with pytest.raises(ssl.SSLError):
        attempts(ssl.SSLError(1, "certificate verify failed"), 1)


def test_another_os_error_is_not_retried() -> None:
    with pytest.raises(PermissionError):
        attempts(PermissionError(errno.EACCES, "denied"), 1)
