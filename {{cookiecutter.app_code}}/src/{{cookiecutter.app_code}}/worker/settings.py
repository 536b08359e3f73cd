"""arq's WorkerSettings, built from the service's settings.

Nothing happens at import: the entry point (worker/main.py) calls `install`, which loads the
settings and prepares the process (logging, the event loop, the batched claim, arq's log
lines), then `worker_settings`. A bad setting (a missing secret, a cron expression that does
not parse) stops the worker there with a message that names the variable.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from functools import partial
from typing import Any, ClassVar

from ..core.config import Settings, SettingsError, load_settings
from ..core.cron import CronError, parse_cron
from ..core.heartbeat import run_forever as beat_forever
from ..core.heartbeat import stop as stop_beating
from ..core.logging import json_lines, setup_logging
from ..core.tracing import quiet, setup_tracing, shutdown_tracing
from ..db import Database, Role
from ..jobs import CRONS, JOBS, submittable
from ..ledger.dispatch import Dispatcher
from ..ledger.dispatch import stop as stop_dispatcher
from ..ledger.tracking import arq_timeout, tracked
from ..ledger.writer import LedgerWriter
from ..queue import (
    CronJob,
    Function,
    RedisSettings,
    cron_job,
    deserialize,
    job_function,
    redis_settings,
    serialize,
)
from . import claim, transactions
from .logs import job_lines
from .metrics import job_metrics
from .metrics import serve as serve_metrics

log = logging.getLogger(__name__)


def install() -> Settings:
    """Prepare this process to be a worker; returns its settings (the worker's own secrets,
    and only those). Called once, by the entry point, before arq builds its Worker."""
    try:
        settings = load_settings().require("worker")
    except SettingsError as exc:
        raise SystemExit(f"worker not started: {exc}") from None
    setup_logging(settings.log_level)
    _use_uvloop()
    claim.install()
    transactions.install()
    job_lines(settings.worker_log_jobs)
    return settings


def _use_uvloop() -> None:
    """Run the worker on uvloop when it is installed (it comes with uvicorn[standard]).

    arq's Worker takes the thread's event loop when it is built, so the loop is set before the
    arq command line builds it. Measured with `make bench`: about 20% less CPU per job than the
    standard loop. Left alone when called inside a running loop (tests).
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows, PyPy
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.set_event_loop(uvloop.new_event_loop())


def _cron_jobs(settings: Settings, timeout_s: float) -> list[CronJob]:
    jobs = []
    for entry in CRONS:
        try:
            when = parse_cron(getattr(settings, entry.setting))
        except CronError as exc:
            raise SystemExit(f"worker not started: {entry.variable} is invalid: {exc}") from None
        # Registered as `cron:<job>`: the FIFO `hello` stays intact, and cron runs get the ids
        # `cron:<job>:<ms>` (jobs/base.py).
        run = tracked(JOBS[entry.job])
        jobs.append(
            cron_job(
                run,
                entry.arq_name,
                when,
                at_startup=entry.at_startup,
                timeout_s=timeout_s,
                keep_result_s=settings.key_ttl_seconds,
            )
        )
    return jobs


async def startup(ctx: dict[str, Any], *, settings: Settings) -> None:
    setup_tracing("worker", redis=False)  # before the pool connects (psycopg's spans)
    json_lines("arq")
    ctx["settings"] = settings
    ctx["worker_id"] = f"{socket.gethostname()}:{os.getpid()}"
    ctx["stats"] = {"done": 0, "failed": 0, "started_ms": int(time.time() * 1000)}
    database = ctx["database"] = Database(settings, Role.DATA)
    await database.open()
    ctx["db"] = database[Role.DATA]
    ctx["ledger"] = LedgerWriter(ctx["db"])
    ctx["metrics"] = job_metrics(ctx["ledger"])
    ctx["metrics_server"] = serve_metrics(
        settings.worker_metrics_host, settings.worker_metrics_port
    )
    # Background work belongs to no job's trace (quiet: no span per heartbeat or sweep).
    ctx["heartbeat"] = asyncio.create_task(beat_forever(ctx), context=quiet())
    dispatcher = Dispatcher(settings, ctx["db"], ctx["redis"])
    ctx["dispatcher"] = asyncio.create_task(dispatcher.run_forever(), context=quiet())
    log.info("worker %s started: queue %s", ctx["worker_id"], settings.queue_name)


async def shutdown(ctx: dict[str, Any]) -> None:
    await stop_dispatcher(ctx.pop("dispatcher", None))
    await stop_beating(ctx)
    ledger = ctx.get("ledger")
    if isinstance(ledger, LedgerWriter):
        await ledger.aclose()
    if "database" in ctx:
        await ctx["database"].close()
    if ctx.get("metrics_server") is not None:
        ctx.pop("metrics_server").shutdown()
    shutdown_tracing()
    if isinstance(ledger, LedgerWriter) and ledger.batches:
        log.info(
            "worker %s stopped: %d ledger writes in %d commits",
            ctx.get("worker_id"),
            ledger.writes,
            ledger.batches,
        )
    else:
        log.info("worker %s stopped", ctx.get("worker_id"))


def worker_settings(settings: Settings) -> type:
    """The class arq's CLI reads (and `arq.worker.create_worker` in tests and benchmarks)."""
    timeout_s = arq_timeout(settings)  # the job's own limit fires first

    class WorkerSettings:
        functions: ClassVar[list[Function]] = [
            job_function(tracked(JOBS[name]), name, timeout_s)
            for name in submittable(settings.bench_job_enabled)
        ]
        cron_jobs: ClassVar[list[CronJob]] = _cron_jobs(settings, timeout_s)
        on_startup = partial(startup, settings=settings)
        on_shutdown = shutdown
        redis_settings: ClassVar[RedisSettings] = redis_settings(settings)
        queue_name = settings.queue_name
        job_serializer = serialize
        job_deserializer = deserialize
        poll_delay = settings.worker_poll_delay
        max_jobs = settings.worker_max_jobs
        job_timeout = timeout_s
        max_tries = settings.worker_max_tries
        # POST /api/v1/jobs/{id}/cancel aborts a running job through arq's abort set.
        allow_abort_jobs = True
        keep_result = settings.key_ttl_seconds
        expires_extra_ms = settings.key_ttl_seconds * 1000
        health_check_interval = settings.worker_health_check_interval

    return WorkerSettings
