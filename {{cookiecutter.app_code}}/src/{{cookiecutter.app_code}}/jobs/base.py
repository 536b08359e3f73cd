"""What a job is: a name, a params model, a coroutine run by the worker; the statuses the
ledger records for it; and how a cron run's id differs from a submitted one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict

# arq's ctx: job_id, job_try, enqueue_time, redis, plus what the worker's on_startup adds
# (settings, db, worker_id).
Ctx = dict[str, Any]

# A job's status in the ledger, from submission to its end.
Status = Literal["queued", "in_progress", "succeeded", "failed"]
STATUSES: Final[tuple[Status, ...]] = get_args(Status)
# The statuses of a job not finished yet; every other one is an outcome (finished_at set), the
# status page's charts show one series each.
UNFINISHED: Final[tuple[Status, ...]] = ("queued", "in_progress")
FINISHED: Final[tuple[Status, ...]] = tuple(s for s in STATUSES if s not in UNFINISHED)

# Who made a job: a client through the API, or the worker's cron.
Source = Literal["api", "cron"]

# Cron runs have the ids `cron:<job>:<run ms>` (arq names a run after its cron job, and the
# worker names its cron jobs `cron:<job>`), so the API refuses client ids with this prefix.
CRON_PREFIX: Final = "cron:"


def job_source(job_id: str) -> Source:
    """Whether `job_id` is a cron run's or a submitted job's."""
    return "cron" if job_id.startswith(CRON_PREFIX) else "api"


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


@dataclass(frozen=True)
class Cron:
    """A job the worker runs on a schedule: the setting that holds its 6-field cron
    expression, and whether it also runs when a worker starts."""

    job: str
    setting: str
    at_startup: bool = False

    @property
    def variable(self) -> str:
        """The environment variable that sets the expression (`.env`)."""
        return self.setting.upper()

    @property
    def arq_name(self) -> str:
        """The name the worker registers the cron job under: its runs get ids
        `<arq_name>:<run ms>`, and the job's own name stays free for submitted runs."""
        return f"{CRON_PREFIX}{self.job}"

    @property
    def run_prefix(self) -> str:
        """What every run id of this cron job starts with."""
        return f"{self.arq_name}:"
