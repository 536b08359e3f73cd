"""What a job is: a name, a params model, a coroutine run by the worker, its retry policy; the
statuses the ledger records for it; and how a cron run's id differs from a submitted one."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict

# arq's ctx: job_id, job_try, enqueue_time, redis, plus what the worker's on_startup adds
# (settings, db, worker_id).
Ctx = dict[str, Any]

# A job's status in the ledger, from submission to its end. `cancelled`: POST .../cancel
# (a retry queues a failed or cancelled job again).
Status = Literal["queued", "in_progress", "succeeded", "failed", "cancelled"]
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
class RetryPolicy:
    """How often a job that raised an ordinary exception runs again, and after how long.

    Retry n (1, 2, ...) waits min(cap_s, backoff_s * 2 ** (n - 1)) seconds, less a random
    share of up to `jitter` of it (so many jobs failing together do not all come back at
    once): between (1 - jitter) and 1 times the capped delay. Exceptions of a type in `never`
    (or a subclass) fail the job at once. arq's WORKER_MAX_TRIES caps every job's runs on top
    of this (ledger/tracking.py): at most min(retries, WORKER_MAX_TRIES - 1) retries.
    """

    retries: int = 0
    backoff_s: float = 1.0
    cap_s: float = 60.0
    jitter: float = 0.25
    never: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff_s < 0 or self.cap_s < 0:
            raise ValueError("retries, backoff_s and cap_s cannot be negative")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter is a share of the delay, 0 to 1; got {self.jitter}")

    def retries_on(self, exc: BaseException) -> bool:
        """Whether `exc` is worth another run at all (not one of `never`)."""
        return self.retries > 0 and not isinstance(exc, self.never)

    def delay(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds before retry number `retry` (1 is the first), jitter included."""
        capped = min(self.cap_s, self.backoff_s * 2.0 ** max(0, retry - 1))
        return capped * (1 - self.jitter * rand())

    def shortest(self, retry: int) -> float:
        """The least `delay(retry)` can be (what tests and the README rely on)."""
        return min(self.cap_s, self.backoff_s * 2.0 ** max(0, retry - 1)) * (1 - self.jitter)


NO_RETRIES: Final = RetryPolicy()


@dataclass(frozen=True)
class JobSpec:
    name: str
    run: Callable[[Ctx, Any], Awaitable[dict[str, Any]]]
    params: type[Params]
    submittable: bool = True
    # Runs again after an ordinary exception (arq itself retries none): RetryPolicy.
    retry: RetryPolicy = field(default=NO_RETRIES)
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
