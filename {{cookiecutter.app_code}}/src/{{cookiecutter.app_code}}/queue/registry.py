"""How the worker registers its job functions and cron jobs with arq."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from arq import cron, func
from arq.cron import CronJob, next_cron
from arq.typing import WorkerCoroutine as JobCoroutine
from arq.worker import Function


def job_function(run: JobCoroutine, name: str, timeout_s: float) -> Function:
    """A function the worker runs when a job of `name` is delivered."""
    return func(run, name=name, timeout=timeout_s)


def cron_job(
    run: JobCoroutine,
    name: str,
    when: Mapping[str, set[int] | None],
    *,
    at_startup: bool,
    timeout_s: float,
    keep_result_s: float,
) -> CronJob:
    """A job the worker runs on the schedule `when` (core.cron.parse_cron's fields); its runs
    get the ids `<name>:<run ms>`. Several workers run each tick once (`unique`), and a worker
    that was cut off from Redis through several ticks enqueues each of them when it is back
    (arq 0.28): the result kept `keep_result_s` refuses the ones another worker ran meanwhile,
    which with arq's default (no result kept) ran again (the template's tests/test_hosts.py)."""
    return cron(
        run,
        name=name,
        run_at_startup=at_startup,
        unique=True,
        timeout=timeout_s,
        keep_result=keep_result_s,
        **when,  # type: ignore[arg-type]
    )


def next_run(when: Mapping[str, set[int] | None], after: datetime) -> datetime:
    """When arq runs a cron job of schedule `when` next after `after` (in after's timezone:
    arq evaluates cron fields in the worker's system timezone)."""
    return next_cron(after, **when)  # type: ignore[arg-type]
