"""Reads only the tests make: what the hello job wrote, and every Redis key of the service.

The service never runs these, so they are not in its named SQL (db/queries.py) or its queue
module; they run through the same connection helper, on the pool of the role the test names.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from {{ cookiecutter.app_code }}.core.config import Settings
from {{ cookiecutter.app_code }}.db.helpers import connection
from {{ cookiecutter.app_code }}.db.pool import Pool
from {{ cookiecutter.app_code }}.queue import ArqRedis


async def hello_row(pool: Pool, job_id: str) -> dict[str, Any] | None:
    """The row the hello job with this id wrote, if any."""
    async with connection(pool) as conn:
        cur = await conn.execute(
            "SELECT job_id, source, message, run_at FROM hello WHERE job_id = %(job_id)s",
            {"job_id": job_id},
        )
        return await cur.fetchone()


async def recent_cron_hellos(pool: Pool, seconds: float) -> list[dict[str, Any]]:
    """The hello rows cron runs wrote in the last `seconds`, newest first."""
    async with connection(pool) as conn:
        cur = await conn.execute(
            "SELECT job_id, source, message, run_at FROM hello WHERE source = 'cron' "
            "AND run_at > now() - make_interval(secs => %(seconds)s) ORDER BY run_at DESC",
            {"seconds": seconds},
        )
        return await cur.fetchall()


async def service_keys(arq: ArqRedis, settings: Settings, count: int = 500) -> AsyncIterator[str]:
    """Every Redis key of this service (arq's and ours), found with SCAN, never KEYS."""
    for pattern in ("arq:*", f"{settings.app_code}:*"):
        async for key in arq.scan_iter(match=pattern, count=count):
            yield key.decode() if isinstance(key, bytes) else str(key)
