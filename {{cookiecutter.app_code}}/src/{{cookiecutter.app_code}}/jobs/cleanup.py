"""Hourly clean-up: cron-made rows older than the key TTL and their Redis keys; and ledger rows
that arq will never finish.

API-submitted jobs are kept: their ledger rows are what refuses a reused id for good.

A row is left `queued` or `in_progress` for good when arq stops without the job's wrapper
seeing it: arq gives up after WORKER_MAX_TRIES (a worker killed again and again, or PostgreSQL
away for longer than the retries), or the job's keys expire before any worker runs it. arq
then keeps a failed result, or nothing; the clean-up finds such rows (older than
UNFINISHED_GRACE_S, with no job key and no in-progress key in Redis) and fails them, saying
why, so that no job looks pending for ever.
"""

from __future__ import annotations

import logging
from typing import Any

from ..db import execute_one, get_many, put_many
from ..queue import let_go
from .base import Ctx, JobSpec, Params

log = logging.getLogger(__name__)

# A queued job has its job key in Redis from the moment its row commits, and a running one
# its in-progress key: a row without either is finished or lost. The grace is for clocks and
# for a worker between arq's steps.
UNFINISHED_GRACE_S = 300
UNFINISHED_BATCH = 1000


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
        "lost_jobs_failed": await fail_lost_jobs(ctx),
    }
    log.info("cleanup: %s", summary)
    return summary


async def fail_lost_jobs(ctx: Ctx) -> int:
    """Fail the ledger rows that arq will never finish (see the module's docstring)."""
    rows = await get_many(
        ctx["db"],
        "cleanup.unfinished",
        {"grace_seconds": UNFINISHED_GRACE_S, "limit": UNFINISHED_BATCH},
    )
    if not rows:
        return 0
    gone = await let_go(ctx["redis"], [row["job_id"] for row in rows])
    lost = [
        {"job_id": row["job_id"], "error": _why(row["status"], gone[row["job_id"]])}
        for row in rows
        if row["job_id"] in gone
    ]
    if lost:
        await put_many(ctx["db"], "cleanup.fail_lost", lost)
        log.warning("cleanup: failed %d jobs that arq will not finish", len(lost))
    return len(lost)


def _why(status: str, outcome: str | None) -> str:
    if outcome is not None:
        return (
            f"arq gave up on the job (ledger said {status}): {outcome}; "
            "see the worker's log, and submit it again under a new id"
        )
    return (
        f"lost (ledger said {status}): Redis has no job, in-progress or result key for it, "
        "so its keys expired before a worker ran it (is a worker running?); "
        "submit it again under a new id"
    )


SPEC = JobSpec(name="cleanup", run=run, params=CleanupParams, submittable=False)
