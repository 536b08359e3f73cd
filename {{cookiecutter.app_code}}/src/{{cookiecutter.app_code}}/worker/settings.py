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
from ..core.logging import json_lines, setup_logging
from ..core.tracing import quiet, setup_tracing, shutdown_tracing
from ..db import Database, Role
from ..jobs import JOBS, submittable
from ..ledger.dispatch import Dispatcher
from ..ledger.dispatch import stop as stop_dispatcher
from ..ledger.tracking import tracked
from ..ledger.writer import LedgerWriter
from ..queue import deserialize, redis_settings, serialize
from . import heartbeat
from .cron import CronError, parse_cron
from .metrics import job_metrics
from .metrics import serve as serve_metrics


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
        return load_settings().require("worker")  # the worker's own secrets, and only those
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
# can start. And a full worker sleeps a poll delay before it looks again, so a slot that frees
# meanwhile stays idle: with 25 ms jobs, a third of the time.
#
# This claims every job there is room for in one round trip, with a Lua script that reads the
# head of the queue itself (so what it sees is never stale, whoever else claims) and makes
# arq's checks atomically (no in-progress key, due) before setting arq's in-progress key. A
# full worker waits for its next free slot, not for the next poll. Measured with `make bench`
# on 2 cores: 40% less CPU per no-op job, and 25 ms jobs at max_jobs=10 went from 60% to 80%
# of the ideal rate. Everything else (running, retries, results, aborts) stays arq's. Applied
# only to the arq version it was written for.

CLAIM_FOR_ARQ = "0.28.0"
# KEYS[1]: the queue. ARGV: now (ms), in-progress TTL (ms), in-progress key prefix, how many
# to claim, how far to read into the queue at first, how far at most. Returns id, score, ...
#
# Running jobs stay at the head of the queue until they finish (arq's design), so the script
# reads past them: a first window, then windows that double, until it has claimed enough or
# read MAX_CLAIM_SCAN entries. Without that, a worker finds only running jobs in the first
# queue_read_limit entries and claims nothing: 100 jobs at once, however many workers run.
_CLAIM_LUA = """
local claimed = {}
local want = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local most = tonumber(ARGV[6])
local offset = 0
while offset < most do
  local head = redis.call(
    'ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', offset, window)
  for i = 1, #head, 2 do
    local key = ARGV[3] .. head[i]
    if redis.call('EXISTS', key) == 0 then
      redis.call('SET', key, '1', 'PX', ARGV[2])
      claimed[#claimed + 1] = head[i]
      claimed[#claimed + 1] = head[i + 1]
      if #claimed >= 2 * want then
        return claimed
      end
    end
  end
  if #head < 2 * window then
    break
  end
  offset = offset + window
  window = window * 2
end
return claimed
"""
# How many jobs (running or due) the claim reads past at most: the most that can run at once.
MAX_CLAIM_SCAN = 10_000
# How long start_jobs keeps claiming before it gives arq's main loop a turn (finished tasks
# are forgotten there, and the health check is written).
CLAIM_SPELL_S = 0.5


class _Claims:
    """Per worker: the registered script, and an event set when a slot frees."""

    def __init__(self, worker: Worker) -> None:
        self.script: AsyncScript = worker.pool.register_script(_CLAIM_LUA)
        self.room = asyncio.Event()


_claims: weakref.WeakKeyDictionary[Worker, _Claims] = weakref.WeakKeyDictionary()
ARQ_START_JOBS = Worker.start_jobs  # arq's own, for `make bench --stock`


async def _start_jobs(self: Worker, job_ids: list[bytes]) -> None:
    """Worker.start_jobs: while the queue has due jobs, fill every free slot, one round trip
    per fill, waiting for a slot to free when the worker is full.

    `job_ids` (arq's read of the queue) only says whether anything is due; the script reads
    the queue afresh each time. Returns when the queue's head has nothing left to claim, or
    after CLAIM_SPELL_S, so that arq's main loop keeps its duties.
    """
    if not job_ids:
        return
    claims = _claims.get(self)
    if claims is None:
        claims = _claims[self] = _Claims(self)

    def ended(_: object) -> None:
        self._release_sem_dec_counter_on_complete()
        claims.room.set()

    ledger = self.ctx.get("ledger")
    # PostgreSQL away: claim nothing, so the jobs wait in the queue with their tries untouched.
    available = ledger.available if isinstance(ledger, LedgerWriter) else None
    loop = asyncio.get_running_loop()
    until = loop.time() + CLAIM_SPELL_S
    timeout_ms = int(self.in_progress_timeout_s * 1000)
    while self.allow_pick_jobs and (available is None or available.is_set()):
        free = self.max_jobs - self.job_counter
        if free <= 0:
            claims.room.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(until):
                    await claims.room.wait()
            free = self.max_jobs - self.job_counter
            if free <= 0 or not self.allow_pick_jobs:
                return
        claimed = await claims.script(
            keys=[self.queue_name],
            args=[
                timestamp_ms(),
                timeout_ms,
                in_progress_key_prefix,
                free,
                self.queue_read_limit,
                MAX_CLAIM_SCAN,
            ],
        )
        for raw_id, raw_score in zip(claimed[::2], claimed[1::2], strict=True):
            job_id = raw_id.decode()
            await self.sem.acquire()  # never waits: job_counter < max_jobs
            self.job_counter += 1
            task = self.loop.create_task(self.run_job(job_id, int(float(raw_score))))
            task.add_done_callback(ended)
            self.tasks[job_id] = task
        if len(claimed) < 2 * free or loop.time() >= until:
            return


def _claim_jobs_in_batches() -> None:
    if ARQ_VERSION != CLAIM_FOR_ARQ:
        logging.getLogger(__name__).warning(
            "arq %s is not %s: claiming jobs one at a time, as arq does",
            ARQ_VERSION,
            CLAIM_FOR_ARQ,
        )
        return
    Worker.start_jobs = _start_jobs  # type: ignore[method-assign]


class QuietJobLines(logging.Filter):
    """Drops arq's two INFO lines per job, started and succeeded (WORKER_LOG_JOBS=false).

    Matched by arq 0.28's message formats; every other line (retries, cancellations,
    failures, expiries) passes, and so does everything if arq changes them.
    """

    LINES = frozenset({"%6.2fs → %s(%s)%s", "%6.2fs ← %s ● %s"})

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self.LINES


def job_lines(enabled: bool) -> None:
    """Log arq's per-job lines (True) or not (WORKER_LOG_JOBS)."""
    arq_log = logging.getLogger("arq.worker")
    for old in [f for f in arq_log.filters if isinstance(f, QuietJobLines)]:
        arq_log.removeFilter(old)
    if not enabled:
        arq_log.addFilter(QuietJobLines())


SETTINGS = _load()
log = setup_logging(SETTINGS.log_level)
_use_uvloop()
_claim_jobs_in_batches()
job_lines(SETTINGS.worker_log_jobs)


async def startup(ctx: dict[str, Any]) -> None:
    setup_tracing("worker", redis=False)  # before the pool connects (psycopg's spans)
    json_lines("arq")
    ctx["settings"] = SETTINGS
    ctx["worker_id"] = f"{socket.gethostname()}:{os.getpid()}"
    ctx["stats"] = {"done": 0, "failed": 0, "started_ms": int(time.time() * 1000)}
    db = Database(SETTINGS, Role.DATA)
    await db.open()
    ctx["database"] = db
    ctx["db"] = db[Role.DATA]
    ctx["ledger"] = LedgerWriter(ctx["db"])
    ctx["metrics"] = job_metrics(ctx["ledger"])
    ctx["metrics_server"] = serve_metrics(
        SETTINGS.worker_metrics_host, SETTINGS.worker_metrics_port
    )
    # Background work belongs to no job's trace (quiet: no span per heartbeat or sweep).
    ctx["heartbeat"] = asyncio.create_task(heartbeat.run_forever(ctx), context=quiet())
    dispatcher = Dispatcher(SETTINGS, ctx["db"], ctx["redis"])
    ctx["dispatcher"] = asyncio.create_task(dispatcher.run_forever(), context=quiet())
    log.info("worker %s started: queue %s", ctx["worker_id"], SETTINGS.queue_name)


async def shutdown(ctx: dict[str, Any]) -> None:
    await stop_dispatcher(ctx.pop("dispatcher", None))
    await heartbeat.stop(ctx)
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


class WorkerSettings:
    """Read by arq's CLI and by `arq.worker.create_worker` in tests and benchmarks."""

    functions: ClassVar[list[Function]] = [
        func(tracked(JOBS[name]), name=name, timeout=SETTINGS.worker_job_timeout + 5)
        for name in submittable(SETTINGS.bench_job_enabled)
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
