"""Hourly clean-up: cron-made rows older than the key TTL, and their Redis keys; the status
page charts' per-minute rollup (job_minute, V9) older than MINUTES_KEPT_S.

API-submitted jobs are kept: their ledger rows are what refuses a reused id for good. Rows
that arq finished or Redis lost are the dispatcher's (ledger/dispatch.py), within seconds.
Built like `hello.py`: a class with one public `execute`, and the summary as its result.
"""

from __future__ import annotations

import logging
from typing import Any

from ..db import execute_one, get_many
from ..db.pool import Pool
from ..queue import ArqRedis, forget_jobs
from .base import Ctx, JobSpec, Params

log = logging.getLogger(__name__)

# The charts show the last hour; two days of minutes are kept for a look back with SQL.
MINUTES_KEPT_S = 2 * 86400


class CleanupParams(Params):
    pass


class CleanupJob:
    function = "cleanup"

    def __init__(self, job_id: str, db: Pool, redis: ArqRedis, ttl_seconds: int) -> None:
        self.job_id = job_id
        self.db = db
        self.redis = redis
        self.ttl_seconds = ttl_seconds

    async def execute(self, params: CleanupParams) -> dict[str, Any]:
        age = {"ttl_seconds": self.ttl_seconds}
        rows = await get_many(self.db, "cleanup.cron_jobs", age)
        hello_rows = await execute_one(self.db, "cleanup.cron_hello", age)
        minute_rows = await execute_one(self.db, "cleanup.minutes", {"keep_s": MINUTES_KEPT_S})
        deleted = await forget_jobs(self.redis, [row["job_id"] for row in rows])
        summary = {
            "ledger_rows": len(rows),
            "hello_rows": hello_rows,
            "minute_rows": minute_rows,
            "redis_keys": deleted,
        }
        log.info("cleanup: %s", summary, extra={"job_id": self.job_id, "function": self.function})
        return summary


async def run(ctx: Ctx, params: CleanupParams) -> dict[str, Any]:
    ttl = ctx["settings"].key_ttl_seconds
    return await CleanupJob(ctx["job_id"], ctx["db"], ctx["redis"], ttl).execute(params)


SPEC = JobSpec(name="cleanup", run=run, params=CleanupParams, submittable=False)
