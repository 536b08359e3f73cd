"""arq's WorkerSettings, built from the service's settings.

Started as `arq {{ cookiecutter.app_code }}.worker.WorkerSettings`. A bad setting (a missing
secret, a cron expression that does not parse) stops the worker at import with a message that
names the variable.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any, ClassVar

from arq import cron, func
from arq.connections import RedisSettings
from arq.cron import CronJob
from arq.worker import Function

from ..core.config import Settings, SettingsError, load_settings
from ..core.logging import setup_logging
from ..db import Database, Role
from ..jobs import JOBS
from ..queue import deserialize, redis_settings, serialize
from . import heartbeat
from .cron import CronError, parse_cron
from .ledger import LedgerWriter, tracked


def _cron_jobs(settings: Settings) -> list[CronJob]:
    jobs = []
    for name, variable, expr, at_startup in (
        ("hello", "HELLO_CRON", settings.hello_cron, True),
        ("cleanup", "CLEANUP_CRON", settings.cleanup_cron, False),
    ):
        try:
            when = parse_cron(expr)
        except CronError as exc:
            raise SystemExit(f"worker not started: {variable} is invalid: {exc}") from None
        jobs.append(
            cron(
                tracked(JOBS[name]),
                # arq registers cron jobs beside the functions: a distinct name keeps the
                # FIFO `hello` intact, and gives cron runs the ids `cron:<name>:<ms>`.
                name=f"cron:{name}",
                run_at_startup=at_startup,
                unique=True,  # several workers: each tick runs once
                timeout=settings.worker_job_timeout + 5,
                **when,  # type: ignore[arg-type]
            )
        )
    return jobs


def _load() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise SystemExit(f"worker not started: {exc}") from None


def _use_uvloop() -> None:
    """Run the worker on uvloop when it is installed (it comes with uvicorn[standard]).

    arq's Worker takes the thread's event loop when it is built, so the loop is set here, at
    import, before the arq command line builds it. Measured with `make bench`: about 20% less
    CPU per job than the standard loop. Left alone when imported inside a running loop (tests).
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows, PyPy
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.set_event_loop(uvloop.new_event_loop())


SETTINGS = _load()
log = setup_logging(SETTINGS.log_level)
_use_uvloop()


async def startup(ctx: dict[str, Any]) -> None:
    ctx["settings"] = SETTINGS
    ctx["worker_id"] = f"{socket.gethostname()}:{os.getpid()}"
    ctx["stats"] = {"done": 0, "failed": 0, "started_ms": int(time.time() * 1000)}
    ctx["db"] = (db := Database(SETTINGS, Role.DATA))
    await db.open()
    ctx["db"] = db[Role.DATA]
    ctx["database"] = db
    ctx["ledger"] = LedgerWriter(ctx["db"])
    ctx["heartbeat"] = asyncio.create_task(heartbeat.run_forever(ctx))
    log.info("worker %s started: queue %s", ctx["worker_id"], SETTINGS.queue_name)


async def shutdown(ctx: dict[str, Any]) -> None:
    await heartbeat.stop(ctx)
    ledger = ctx.get("ledger")
    if isinstance(ledger, LedgerWriter):
        await ledger.aclose()
    if "database" in ctx:
        await ctx["database"].close()
    if isinstance(ledger, LedgerWriter) and ledger.batches:
        log.info(
            "worker %s stopped: %d ledger writes in %d commits",
            ctx.get("worker_id"),
            ledger.writes,
            ledger.batches,
        )
    else:
        log.info("worker %s stopped", ctx.get("worker_id"))


class WorkerSettings:
    """Read by arq's CLI and by `arq.worker.create_worker` in tests and benchmarks."""

    functions: ClassVar[list[Function]] = [
        func(tracked(spec), name=name, timeout=SETTINGS.worker_job_timeout + 5)
        for name, spec in JOBS.items()
        if spec.submittable
    ]
    cron_jobs: ClassVar[list[CronJob]] = _cron_jobs(SETTINGS)
    on_startup = startup
    on_shutdown = shutdown
    redis_settings: ClassVar[RedisSettings] = redis_settings(SETTINGS)
    queue_name = SETTINGS.queue_name
    job_serializer = serialize
    job_deserializer = deserialize
    poll_delay = SETTINGS.worker_poll_delay
    max_jobs = SETTINGS.worker_max_jobs
    job_timeout = SETTINGS.worker_job_timeout + 5
    max_tries = SETTINGS.worker_max_tries
    keep_result = SETTINGS.key_ttl_seconds
    expires_extra_ms = SETTINGS.key_ttl_seconds * 1000
    health_check_interval = SETTINGS.worker_health_check_interval
