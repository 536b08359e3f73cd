"""Claiming jobs in batches: replaces arq's `Worker.start_jobs`.

arq's Worker.start_jobs claims the jobs it read one at a time, four Redis round trips each
(WATCH, EXISTS, ZSCORE, MULTI/PSETEX/EXEC), one after the other in the worker's main loop:
py-spy puts 15-20% of a worker's CPU there, and the serial round trips cap what one worker
can start. And a full worker sleeps a poll delay before it looks again, so a slot that frees
meanwhile stays idle: with 25 ms jobs, a third of the time.

This claims every job there is room for in one round trip, with a Lua script that reads the
head of the queue itself (so what it sees is never stale, whoever else claims) and makes
arq's checks atomically (no in-progress key, due) before setting arq's in-progress key. A
full worker waits for its next free slot, not for the next poll. Measured with `make bench`
on 2 cores: 40% less CPU per no-op job, and 25 ms jobs at max_jobs=10 went from 60% to 80%
of the ideal rate. Everything else (running, retries, results, aborts) stays arq's.

It also replaces arq's `Worker._poll_iteration` with one that makes two Redis round trips
fewer a poll (100 polls a second): arq's read of its own queue, which the claim does not use
(it reads the three priorities' queues itself), and, while no job runs here, arq's check of
its abort set (an abort cancels only a job that runs; one that starts later is refused by
arq's run_job, which reads the set itself). Measured on an idle worker: 8-9% of a core
before, 4-5% after, as before the priorities and job control.

The one module besides the queue package that imports arq, and the only one that touches
its Worker's members: `install` applies it to the arq version it was written for, and only to that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any

from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.version import VERSION as ARQ_VERSION
from arq.worker import Worker

from ..ledger.writer import LedgerWriter
from ..queue import all_queues, turns_key

log = logging.getLogger(__name__)

CLAIM_FOR_ARQ = "0.28.0"
# KEYS: the high, default (arq's own) and low queues, and the turn counter. ARGV: now (ms),
# in-progress TTL (ms), in-progress key prefix, how many to claim, how far to read into a queue
# at first, how far at most, every how many claims one is a fair turn. Returns id, score, ...
#
# Order: each claim takes the head of `high`, else of `default`, else of `low` (due entries
# only: score <= now; a delayed job is scored at its run_at). Within a queue, oldest score
# first (the enqueue time: first in, first out). Anti-starvation: every `every`-th claim
# (counted across all workers in KEYS[4]) is a fair turn and takes the oldest due entry of any
# queue instead, so under a steady `high` load `low` still gets a slot in `every` once its head
# is the oldest, and a `high` job behind a `low` backlog waits at most one extra slot.
#
# A job claimed from `high` or `low` moves to arq's queue at the same score: arq finishes,
# retries and aborts jobs there (Worker.finish_job), and a worker that died leaves it there to
# be claimed again when its in-progress key expires (a job arq retries runs at `default`).
#
# Running jobs stay at the head of arq's queue until they finish (arq's design), so the script
# reads past them: a first window, then windows that double, until it has found enough or read
# MAX_CLAIM_SCAN entries. Without that, a worker finds only running jobs in the first
# queue_read_limit entries and claims nothing: 100 jobs at once, however many workers run.
CLAIM_LUA = """
local now = ARGV[1]
local want = tonumber(ARGV[4])
local every = tonumber(ARGV[7])
local function due(queue)
  local found = {}
  local window = tonumber(ARGV[5])
  local most = tonumber(ARGV[6])
  local offset = 0
  while offset < most do
    local head = redis.call(
      'ZRANGEBYSCORE', queue, '-inf', now, 'WITHSCORES', 'LIMIT', offset, window)
    for i = 1, #head, 2 do
      if redis.call('EXISTS', ARGV[3] .. head[i]) == 0 then
        found[#found + 1] = {head[i], tonumber(head[i + 1])}
        if #found >= want then
          return found
        end
      end
    end
    if #head < 2 * window then
      break
    end
    offset = offset + window
    window = window * 2
  end
  return found
end
local found = {}
local at = {1, 1, 1}
local function head(q)
  if found[q] == nil then
    found[q] = due(KEYS[q])
  end
  return found[q][at[q]]
end
local turn = tonumber(redis.call('GET', KEYS[4]) or '0')
local claimed = {}
while #claimed < 2 * want do
  local pick = nil
  if every > 0 and (turn + 1) % every == 0 then
    for q = 1, 3 do
      local h = head(q)
      if h and (pick == nil or h[2] < head(pick)[2]) then
        pick = q
      end
    end
  else
    for q = 1, 3 do
      if head(q) then
        pick = q
        break
      end
    end
  end
  if pick == nil then
    break
  end
  turn = turn + 1
  local h = head(pick)
  at[pick] = at[pick] + 1
  redis.call('SET', ARGV[3] .. h[1], '1', 'PX', ARGV[2])
  if pick ~= 2 then
    redis.call('ZREM', KEYS[pick], h[1])
    redis.call('ZADD', KEYS[2], h[2], h[1])
  end
  claimed[#claimed + 1] = h[1]
  claimed[#claimed + 1] = h[2]
end
if #claimed > 0 then
  redis.call('SET', KEYS[4], turn % 1000000)
end
return claimed
"""
# One claim in this many is a fair turn (the oldest due job of any priority): `low` gets at
# least this share of the slots it waits for under a steady `high` load.
FAIR_EVERY = 5
# How many jobs (running or due) the claim reads past at most: the most that can run at once.
MAX_CLAIM_SCAN = 10_000
# How long start_jobs keeps claiming before it gives arq's main loop a turn (finished tasks
# are forgotten there, and the health check is written).
CLAIM_SPELL_S = 0.5
# arq's own, for `make bench --stock` (uninstall).
ARQ_START_JOBS = Worker.start_jobs
ARQ_POLL_ITERATION = Worker._poll_iteration


class Claimer:
    """The claim script, registered on one Redis client."""

    def __init__(self, redis: Any) -> None:
        self.script = redis.register_script(CLAIM_LUA)

    async def claim(
        self,
        queue: str,
        *,
        want: int,
        in_progress_ms: int,
        window: int,
        most: int = MAX_CLAIM_SCAN,
        now_ms: int | None = None,
        every: int = FAIR_EVERY,
    ) -> list[tuple[str, int]]:
        """Up to `want` due jobs that no worker holds, from the queues of arq's queue `queue`
        (high, default, low; CLAIM_LUA's order), as (id, score): each now carries arq's
        in-progress key for `in_progress_ms` and waits in `queue`."""
        raw = await self.script(
            keys=[*all_queues(queue), turns_key(queue)],
            args=[
                timestamp_ms() if now_ms is None else now_ms,
                in_progress_ms,
                in_progress_key_prefix,
                want,
                window,
                most,
                every,
            ],
        )
        return [(i.decode(), int(float(s))) for i, s in zip(raw[::2], raw[1::2], strict=True)]


class _Claims(Claimer):
    """Per worker: the claimer, and an event set when a slot frees."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(worker.pool)
        self.room = asyncio.Event()


_claims: weakref.WeakKeyDictionary[Worker, _Claims] = weakref.WeakKeyDictionary()


async def _start_jobs(self: Worker, job_ids: list[bytes]) -> None:
    """Worker.start_jobs: while the queue has due jobs, fill every free slot, one round trip
    per fill, waiting for a slot to free when the worker is full.

    `job_ids` (arq's read of its own queue) is not used: the script reads all three queues
    afresh each time, so it runs even when arq's queue has nothing due. Returns when the
    queues have nothing left to claim, or after CLAIM_SPELL_S, so that arq's main loop keeps
    its duties.
    """
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
    in_progress_ms = int(self.in_progress_timeout_s * 1000)
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
        claimed = await claims.claim(
            self.queue_name,
            want=free,
            in_progress_ms=in_progress_ms,
            window=self.queue_read_limit,
        )
        for job_id, score in claimed:
            await self.sem.acquire()  # never waits: job_counter < max_jobs
            self.job_counter += 1
            task = self.loop.create_task(self.run_job(job_id, score))
            task.add_done_callback(ended)
            self.tasks[job_id] = task
        if len(claimed) < free or loop.time() >= until:
            return


async def _poll_iteration(self: Worker) -> None:
    """Worker._poll_iteration of arq 0.28, less its read of its own queue (start_jobs claims
    from all three queues itself) and less the abort check while no job runs here."""
    if self.burst and self.max_burst_jobs >= 0 and self.max_burst_jobs <= self._jobs_started():
        return
    if self.allow_pick_jobs and self.job_counter < self.max_jobs:
        await self.start_jobs([])
    if self.allow_abort_jobs and self.job_tasks:
        await self._cancel_aborted_jobs()
    for job_id, task in list(self.tasks.items()):
        if task.done():
            del self.tasks[job_id]
            task.result()  # an error of run_job comes out here, as in arq
    await self.heart_beat()


def install() -> bool:
    """Claim in batches from now on; False (arq's own claim stays) on another arq version."""
    if ARQ_VERSION != CLAIM_FOR_ARQ:
        log.warning(
            "arq %s is not %s: claiming jobs one at a time, as arq does",
            ARQ_VERSION,
            CLAIM_FOR_ARQ,
        )
        return False
    Worker.start_jobs = _start_jobs  # type: ignore[method-assign]
    Worker._poll_iteration = _poll_iteration  # type: ignore[method-assign]
    return True


def uninstall() -> None:
    """arq's own claim and poll again (`make bench --stock`)."""
    Worker.start_jobs = ARQ_START_JOBS  # type: ignore[method-assign]
    Worker._poll_iteration = ARQ_POLL_ITERATION  # type: ignore[method-assign]
