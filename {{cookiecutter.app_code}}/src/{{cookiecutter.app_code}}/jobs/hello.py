"""The sample job, and the model for every job you add.

A class built with the job id, one public `execute`, a start and a complete log line, an
idempotent write (arq delivers at least once: a re-run after a crash inserts nothing twice),
and the complete dict, without `job_id`, as the result arq stores.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import Field

from ..db import execute_one
from ..db.pool import Pool
from .base import Ctx, JobSpec, Params, RetryPolicy, job_source

log = logging.getLogger(__name__)


class HelloParams(Params):
    name: str = Field("world", min_length=1, max_length=100, description="Who to greet.")
    sleep_ms: int = Field(0, ge=0, le=60_000, description="Pretend to work this long.")
    fail: bool = Field(False, description="Fail for real (the job ends `failed`, without a retry).")
    fail_until_try: int = Field(
        0,
        ge=0,
        le=100,
        description="Raise on every try before this one (its retry policy runs it again): "
        "3 fails twice, then succeeds on the third try.",
    )


class HelloFailed(RuntimeError):
    """Raised when the caller asked the job to fail: never retried (RETRY.never)."""


class HelloNotYet(RuntimeError):
    """Raised on the tries before `fail_until_try`: an ordinary failure, retried."""


# 3 retries, 0.5 s then 1 s then 2 s (less up to a quarter), never for `fail`.
RETRY = RetryPolicy(retries=3, backoff_s=0.5, cap_s=10.0, jitter=0.25, never=(HelloFailed,))


class HelloJob:
    function = "hello"

    def __init__(self, job_id: str, db: Pool) -> None:
        self.job_id = job_id
        self.db = db
        self.source = job_source(job_id)

    async def execute(self, params: HelloParams, job_try: int = 1) -> dict[str, Any]:
        self._log(f"hello {params.name}: started")
        if params.sleep_ms:
            await asyncio.sleep(params.sleep_ms / 1000)
        if params.fail:
            raise HelloFailed(f"hello {params.name}: failed because params.fail is true")
        if job_try < params.fail_until_try:
            raise HelloNotYet(
                f"hello {params.name}: try {job_try} fails (fail_until_try is "
                f"{params.fail_until_try})"
            )
        message = f"hello {params.name}"
        await execute_one(
            self.db,
            "hello.insert",
            {"job_id": self.job_id, "source": self.source, "message": message},
        )
        complete = self._log(f"{message}: complete")
        complete.pop("job_id")
        return complete

    def _log(self, message: str) -> dict[str, Any]:
        record = {
            "job_id": self.job_id,
            "function": self.function,
            "message": message,
            "timestamp": datetime.now(UTC).isoformat(),
        }
        # One JSON line (core/logging.py) with job_id and function beside the message.
        log.info(message, extra={"job_id": self.job_id, "function": self.function})
        return record


async def run(ctx: Ctx, params: HelloParams) -> dict[str, Any]:
    return await HelloJob(ctx["job_id"], ctx["db"]).execute(params, ctx.get("job_try", 1))


SPEC = JobSpec(name="hello", run=run, params=HelloParams, retry=RETRY)
