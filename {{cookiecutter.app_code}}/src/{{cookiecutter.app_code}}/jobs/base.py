"""What a job is: a name, a params model, and a coroutine run by the worker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

# arq's ctx: job_id, job_try, enqueue_time, redis, plus what the worker's on_startup adds
# (settings, db, worker_id).
Ctx = dict[str, Any]


class Params(BaseModel):
    """Base of every job's params: unknown keys are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class JobSpec:
    name: str
    run: Callable[[Ctx, Any], Awaitable[dict[str, Any]]]
    params: type[Params]
    submittable: bool = True
    # Only for `make bench` (jobs/noop.py): submittable and registered only with BENCH_JOB on.
    bench_only: bool = False
