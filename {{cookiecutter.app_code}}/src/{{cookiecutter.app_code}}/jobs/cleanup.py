"""Hourly clean-up: cron-made rows older than the key TTL, and their Redis keys.

API-submitted jobs are kept: their ledger rows are what refuses a reused id for good. Rows
that arq finished or Redis lost are the dispatcher's (ledger/dispatch.py), within seconds.
"""

from __future__ import annotations

import logging
from typing import Any

from ..db import execute_one, get_many
from .base import Ctx, JobSpec, Params

log = logging.getLogger(__name__)


class CleanupParams(Params):
    pass


async def run(ctx: Ctx, params: CleanupParams) -> dict[str, Any]:
    ttl = ctx["settings"].key_ttl_seconds
    rows = await get_many(ctx["db"], "cleanup.cron_jobs", {"ttl_seconds": ttl})
    hello_rows = await execute_one(ctx["db"], "cleanup.cron_hello", {"ttl_seconds": ttl})
    keys = [f"arq:{kind}:{row['job_id']}" for row in rows for kind in ("job", "result", "retry")]
    deleted = 0
    for start in range(0, len(keys), 500):
        deleted += await ctx["redis"].delete(*keys[start : start + 500])
    summary = {
        "ledger_rows": len(rows),
        "hello_rows": hello_rows,
        "redis_keys": deleted,
    }
    log.info("cleanup: %s", summary)
    return summary


SPEC = JobSpec(name="cleanup", run=run, params=CleanupParams, submittable=False)
