"""arq's WorkerSettings, built from the service's settings.

Started as `arq {{ cookiecutter.app_code }}.worker.WorkerSettings`. A bad setting (a missing
secret, a cron expression that does not parse) stops the worker at import with a message that
names the variable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import weakref
from typing import Any, ClassVar

from arq import cron, func
from arq.connections import RedisSettings
from arq.constants import in_progress_key_prefix
from arq.cron import CronJob
from arq.utils import timestamp_ms
from arq.version import VERSION as ARQ_VERSION
from arq.worker import Function, Worker
from redis.commands.core import AsyncScript

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


# --- Claiming jobs in batches ----------------------------------------------------------------
#
# arq's Worker.start_jobs claims the jobs it read one at a time, four Redis round trips each
# (WATCH, EXISTS, ZSCORE, MULTI/PSETEX/EXEC), one after the other in the worker's main loop:
# py-spy puts 15-20% of a worker's CPU there, and the serial round trips cap what one worker
# can start. This claims every job there is room for in one round trip, with a Lua script
# that makes the same checks atomically (no in-progress key, still queued, due) and sets the
# same in-progress key. Measured with `make bench` on 2 cores: 40% less CPU per job, and the
# ledger's batches grow with the jobs that now start together. Everything else (running,
# retries, results, aborts) stays arq's. Applied only to the arq version it was written for.

CLAIM_FOR_ARQ = "0.28.0"
# KEYS[1]: the queue; ARGV: now (ms), in-progress TTL (ms), in-progress key prefix, job ids.
_CLAIM_LUA = """
local claimed = {}
local now = tonumber(ARGV[1])
for i = 4, #ARGV do
  local key = ARGV[3] .. ARGV[i]
  if redis.call('EXISTS', key) == 0 then
    local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
    if score and tonumber(score) <= now then
      redis.call('SET', key, '1', 'PX', ARGV[2])
      claimed[#claimed + 1] = ARGV[i]
      claimed[#claimed + 1] = score
    end
  end
end
return claimed
"""


class _Claims:
    """Per worker: the registered script, and an event set when half its slots are free."""

    def __init__(self, worker: Worker) -> None:
        self.script: AsyncScript = worker.pool.register_script(_CLAIM_LUA)
        self.room = asyncio.Event()
        self.enough = max(1, worker.max_jobs // 2)


_claims: weakref.WeakKeyDictionary[Worker, _Claims] = weakref.WeakKeyDictionary()
ARQ_START_JOBS = Worker.start_jobs  # arq's own, for `make bench --stock`


async def _start_jobs(self: Worker, job_ids: list[bytes]) -> None:
    """Worker.start_jobs, claiming as many jobs as there are free slots per round trip.

    When the worker is full it waits, up to a poll delay, for half its slots to be free and
    claims the next jobs at once, instead of leaving them all to the next poll as arq does.
    """
    claims = _claims.get(self)
    if claims is None:
        claims = _claims[self] = _Claims(self)

    def ended(_: object) -> None:
        self._release_sem_dec_counter_on_complete()
        if self.max_jobs - self.job_counter >= claims.enough:
            claims.room.set()

    pending = [job_id.decode() for job_id in job_ids]
    while pending and self.allow_pick_jobs:
        free = self.max_jobs - self.job_counter
        if free < claims.enough:
            claims.room.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_delay_s):
                    await claims.room.wait()
            free = self.max_jobs - self.job_counter
            if free <= 0:  # still full: the next poll
                return
        batch, pending = pending[:free], pending[free:]
        timeout_ms = int(self.in_progress_timeout_s * 1000)
        claimed = await claims.script(
            keys=[self.queue_name],
            args=[timestamp_ms(), timeout_ms, in_progress_key_prefix, *batch],
        )
        for raw_id, raw_score in zip(claimed[::2], claimed[1::2], strict=True):
            job_id = raw_id.decode()
            await self.sem.acquire()  # never waits: job_counter < max_jobs
            self.job_counter += 1
            task = self.loop.create_task(self.run_job(job_id, int(float(raw_score))))
            task.add_done_callback(ended)
            self.tasks[job_id] = task


def _claim_jobs_in_batches() -> None:
    if ARQ_VERSION != CLAIM_FOR_ARQ:
        logging.getLogger(__name__).warning(
            "arq %s is not %s: claiming jobs one at a time, as arq does",
            ARQ_VERSION,
            CLAIM_FOR_ARQ,
        )
        return
    Worker.start_jobs = _start_jobs  # type: ignore[method-assign]


SETTINGS = _load()
log = setup_logging(SETTINGS.log_level)
_use_uvloop()
_claim_jobs_in_batches()


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
