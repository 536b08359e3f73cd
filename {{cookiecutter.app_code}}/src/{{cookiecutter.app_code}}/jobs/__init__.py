"""The registry of job functions and their schedules, shared by the worker (what it runs, and
when) and the API (what it accepts, and what the status page shows).

To add a job: copy `hello.py`, give it a params model and a class with one public `execute`,
and add its `SPEC` to `JOBS` below. Cron-only jobs set `submittable=False`, the bench's job
`bench_only=True`; a job that runs on a schedule gets a `Cron` in `CRONS` and a setting
(core/config.py) that holds its expression.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from . import cleanup, hello, noop
from .base import (
    CRON_PREFIX,
    FINISHED,
    STATUSES,
    Cron,
    JobSpec,
    RetryPolicy,
    Source,
    Status,
    job_source,
)

JOBS: Final[Mapping[str, JobSpec]] = MappingProxyType(
    {spec.name: spec for spec in (hello.SPEC, cleanup.SPEC, noop.SPEC)}
)

CRONS: Final[tuple[Cron, ...]] = (
    Cron("hello", "hello_cron", at_startup=True),
    Cron("cleanup", "cleanup_cron"),
)


def submittable(bench_job: bool = False) -> list[str]:
    """Names a client may submit through the API (the bench's `noop` only with BENCH_JOB on)."""
    return sorted(
        name
        for name, spec in JOBS.items()
        if spec.submittable and (bench_job or not spec.bench_only)
    )


__all__ = [
    "CRONS",
    "CRON_PREFIX",
    "FINISHED",
    "JOBS",
    "STATUSES",
    "Cron",
    "JobSpec",
    "RetryPolicy",
    "Source",
    "Status",
    "job_source",
    "submittable",
]
