#!/usr/bin/env python3
"""One arq worker process for `make bench`: the service's own WorkerSettings, on a bench queue.

Started by bench/run.py, never by hand. It runs exactly what `arq <app>.worker.main.WorkerSettings`
runs (same functions, ledger wrapper, start-up hooks, logging), plus the `noop` job (which
the stack's own worker registers only with BENCH_JOB on), with four overrides:

- `--queue`: its own queue, so the stack's worker (`make up`) never takes a bench job and the
  bench workers never take the stack's;
- `--poll-delay` / `--max-jobs`: the values under test (default: the service's settings);
- `--ledger off`: the job functions without the ledger wrapper, to see what the ledger costs;
- `--stock`: arq as it comes: its defaults (poll_delay 0.5 s, max_jobs 10, queue_read_limit
  100), the standard asyncio loop, arq's own one-job-at-a-time claim and its two log lines per
  job: the baseline.

No cron jobs: the stack's worker runs those.
"""

from __future__ import annotations

import argparse
import asyncio
import logging.config
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from arq import func  # noqa: E402
from arq.logs import default_log_config  # noqa: E402
from arq.worker import Function, create_worker  # noqa: E402

from {{ cookiecutter.app_code }}.jobs import JOBS, JobSpec, submittable  # noqa: E402
from {{ cookiecutter.app_code }}.jobs.base import Ctx  # noqa: E402
from {{ cookiecutter.app_code }}.ledger.tracking import tracked  # noqa: E402
from {{ cookiecutter.app_code }}.worker import transactions  # noqa: E402
from {{ cookiecutter.app_code }}.worker.claim import uninstall  # noqa: E402
from {{ cookiecutter.app_code }}.worker.logs import job_lines  # noqa: E402
from {{ cookiecutter.app_code }}.worker.main import SETTINGS, WorkerSettings  # noqa: E402

ARQ_STOCK = {"poll_delay": 0.5, "max_jobs": 10, "queue_read_limit": None}


def untracked(spec: JobSpec) -> Any:
    """The job without the ledger wrapper: params validated, then run."""

    async def run(ctx: Ctx, **raw: Any) -> dict[str, Any]:
        return await spec.run(ctx, spec.params.model_validate(raw))

    run.__name__ = run.__qualname__ = spec.name
    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--poll-delay", type=float, default=None)
    parser.add_argument("--max-jobs", type=int, default=None)
    parser.add_argument("--ledger", choices=("on", "off"), default="on")
    parser.add_argument("--stock", action="store_true")
    args = parser.parse_args(argv)

    overrides: dict[str, Any] = {"queue_name": args.queue, "cron_jobs": []}
    if args.stock:
        overrides.update(ARQ_STOCK)
        # arq's own loop: the standard asyncio one, whatever the service's settings installed.
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
        asyncio.set_event_loop(asyncio.new_event_loop())
        uninstall()  # arq's claim, one job at a time, and its poll
        transactions.uninstall()  # a Redis round trip per transaction, as redis-py makes them
        job_lines(True)  # arq logs two lines per job
    if args.poll_delay is not None:
        overrides["poll_delay"] = args.poll_delay
    if args.max_jobs is not None:
        overrides["max_jobs"] = args.max_jobs
    # Every submittable job, the bench's `noop` included whatever BENCH_JOB says: the bench
    # registers it here, on its own queues.
    wrap = untracked if args.ledger == "off" else tracked
    functions: list[Function] = [
        func(wrap(JOBS[name]), name=name, timeout=SETTINGS.worker_job_timeout + 5)
        for name in submittable(bench_job=True)
    ]
    overrides["functions"] = functions

    logging.config.dictConfig(default_log_config(verbose=False))  # as arq's command line does
    create_worker(WorkerSettings, **overrides).run()  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
