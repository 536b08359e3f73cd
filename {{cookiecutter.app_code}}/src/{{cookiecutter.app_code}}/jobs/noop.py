"""A job that does nothing (or sleeps): the unit of work `make bench` measures.

Not part of the product's API: the API accepts it and the stack's worker runs it only while
BENCH_JOB is on (by default with ENV=dev, core/config.py); the bench's own workers always run it.

It goes through the same ledger-tracked path as every job, so a benchmark of `noop` measures
what the service adds around a job: the queue, the ledger writes and the worker's bookkeeping.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import Field

from .base import Ctx, JobSpec, Params


class NoopParams(Params):
    sleep_ms: int = Field(0, ge=0, le=60_000, description="Sleep this long (0: return at once).")


async def run(ctx: Ctx, params: NoopParams) -> dict[str, Any]:
    if params.sleep_ms:
        await asyncio.sleep(params.sleep_ms / 1000)
    return {}


SPEC = JobSpec(name="noop", run=run, params=NoopParams, bench_only=True)
