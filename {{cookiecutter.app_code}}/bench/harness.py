"""The bench's own machinery: names, bench workers, staging jobs, drains, ledger checks.

Every job is a `noop` (jobs/noop.py) tracked by the ledger like any other job; ids start with
`bench-<run>-<phase>-`, so each phase's rows are one id prefix that the ledger's own reads
(ledger/reads.py, its job_id prefix index) return. A drain stages its jobs in a key of its own,
then renames it onto the bench workers' queue, so that every job is visible at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arq.connections import ArqRedis
from console import BenchError, Progress, say
from meters import CpuMeter, Reading, cpu_seconds, idle_cpu, rss, total, with_children
from psycopg import sql
from services import stack_pid

from {{ cookiecutter.app_code }}.core.config import Settings
from {{ cookiecutter.app_code }}.core.heartbeat import workers_key
from {{ cookiecutter.app_code }}.db import Database, Role
from {{ cookiecutter.app_code }}.ledger.reads import list_jobs
from {{ cookiecutter.app_code }}.queue import all_queues, turns_key

ROOT = Path(__file__).resolve().parents[1]
ROWS_PAGE = 5000
# The product has no verb to delete jobs (nor should it); the bench removes its own rows.
DELETE_RUN = sql.SQL("DELETE FROM job WHERE job_id LIKE {}")


@dataclass
class Worker:
    """A bench worker process (bench/worker.py)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def worker_id(self) -> str:
        return f"{socket.gethostname()}:{self.proc.pid}"


def spawn(name: str, log: Path, argv: tuple[str, ...]) -> Worker:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "worker.py"), *argv],
            cwd=ROOT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Worker(name, proc, log)


def prefix_of(ids: list[str]) -> str:
    """The id prefix a phase's ids share: `bench-<run>-<phase>-`."""
    return ids[0].rsplit("-", 1)[0] + "-"


@dataclass
class Bench:
    settings: Settings
    args: argparse.Namespace
    arq: ArqRedis
    database: Database
    run_id: str
    logs: Path
    mode: str | None
    results: dict[str, Any] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)
    queues: set[str] = field(default_factory=set)
    job_ids: list[str] = field(default_factory=list)

    def queue(self, name: str) -> str:
        queue = f"{self.settings.app_code}:bench:{self.run_id}:{name}"
        self.queues.add(queue)
        return queue

    def ids(self, phase: str, count: int) -> list[str]:
        new = [f"{self.run_id}-{phase}-{i}" for i in range(count)]
        self.job_ids.extend(new)
        return new

    def error(self, message: str) -> None:
        """A wrong result: reported at the end, and the bench exits 1."""
        self.results.setdefault("errors", []).append(message)

    # -- workers ------------------------------------------------------------------------------

    async def start_workers(self, name: str, count: int, *argv: str) -> list[Worker]:
        """Start `count` bench workers and wait for each one's heartbeat."""
        started = []
        for _ in range(count):
            worker = spawn(name, self.logs / f"worker-{name}-{len(self.workers)}.log", argv)
            self.workers.append(worker)
            started.append(worker)
        deadline = time.monotonic() + 60
        key = workers_key(self.settings.app_code)
        for worker in started:
            while await self.arq.zscore(key, worker.worker_id) is None:
                if worker.proc.poll() is not None:
                    tail = worker.log.read_text(errors="replace")[-2000:]
                    raise BenchError(f"bench worker {name} exited at start:\n{tail}")
                if time.monotonic() > deadline:
                    raise BenchError(f"bench worker {name}: no heartbeat in 60 s; see {worker.log}")
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # its first poll and health check are behind it
        return started

    async def stop_workers(self, workers: list[Worker]) -> None:
        for worker in workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                await asyncio.to_thread(worker.proc.wait, 20)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
            if worker in self.workers:
                self.workers.remove(worker)

    @staticmethod
    def rss(worker: Worker) -> int | None:
        return rss(worker.pid)

    @staticmethod
    async def idle_cpu(workers: list[Worker], seconds: float = 2.0) -> float | None:
        return await idle_cpu([w.pid for w in workers], seconds)

    # -- queues -------------------------------------------------------------------------------

    async def enqueue(
        self, queue: str, ids: list[str], params: dict[str, Any], label: str | None = None
    ) -> float:
        """Enqueue `ids` as noop jobs into `queue`, `concurrency` at a time; the seconds taken."""
        progress = Progress(label, len(ids)) if label else None
        pending = iter(ids)
        done = 0

        async def sender() -> None:
            nonlocal done
            for job_id in pending:
                job = await self.arq.enqueue_job(
                    "noop",
                    _job_id=job_id,
                    _queue_name=queue,
                    _expires=self.settings.key_ttl_seconds,
                    **params,
                )
                if job is None:
                    raise BenchError(f"arq refused job id {job_id}: it exists already")
                done += 1
                if progress and done % 200 == 0:
                    progress.update(done)

        start = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(self.args.concurrency)))
        took = time.perf_counter() - start
        if progress:
            progress.finish(f"{len(ids) / took:,.0f} jobs/s ({len(ids)} in {took:.2f} s)")
        return took

    def meter(self, workers: list[Worker]) -> CpuMeter:
        """CPU of the bench workers, the stack's Redis and PostgreSQL (native stack only)."""
        pids = [w.pid for w in workers]
        groups: dict[str, Reading] = {  # the stack's pids are found again at each reading
            "workers": lambda: total(cpu_seconds(p) for p in pids),
            "redis": lambda: cpu_seconds(stack_pid("redis", self.mode)),
            "postgres": lambda: total(
                cpu_seconds(p) for p in with_children(stack_pid("postgres", self.mode))
            ),
        }
        return CpuMeter(groups)

    async def drain(
        self, label: str, queue: str, staging: str, count: int, workers: list[Worker]
    ) -> dict[str, Any]:
        """Make the staged jobs visible at once, time until the queue is empty."""
        meter = self.meter(workers)
        progress = Progress(label, count)
        await self.arq.rename(staging, queue)
        start = time.perf_counter()
        left = count
        while left:
            await asyncio.sleep(0.005)
            left = int(await self.arq.zcard(queue))
            progress.update(count - left)
            if time.perf_counter() - start > self.args.phase_timeout:
                raise BenchError(
                    f"{label}: {left} of {count} jobs still queued after "
                    f"{self.args.phase_timeout:.0f} s; see {self.logs}"
                )
            for worker in workers:
                if worker.proc.poll() is not None:
                    raise BenchError(f"{label}: a bench worker died; see {worker.log}")
        took = time.perf_counter() - start
        result: dict[str, Any] = {
            "jobs": count,
            "workers": len(workers),
            "seconds": round(took, 3),
            "jobs_per_s": round(count / took, 1),
            "cpu_ms_per_job": meter.per_job_ms(count),
        }
        progress.finish(f"{result['jobs_per_s']:,.0f} jobs/s ({count} in {took:.2f} s)")
        return result

    # -- the ledger ---------------------------------------------------------------------------

    async def rows(self, ids: list[str]) -> list[dict[str, Any]]:
        """The ledger rows of a phase's jobs, through the ledger's own reads."""
        wanted = set(ids)
        rows = await self.rows_by_prefix(prefix_of(ids))
        return [row for row in rows if row["job_id"] in wanted]

    async def rows_by_prefix(self, prefix: str) -> list[dict[str, Any]]:
        """Every ledger row whose id starts with `prefix`, page after page."""
        found: list[dict[str, Any]] = []
        cursor = None
        while True:
            rows, cursor = await list_jobs(
                self.database[Role.ADMIN], id_prefix=prefix, before=cursor, limit=ROWS_PAGE
            )
            found.extend(rows)
            if cursor is None:
                return found

    async def ledger_check(
        self, ids: list[str], expect: str | None, record: bool = True
    ) -> dict[str, Any]:
        """Every job's ledger row and status (None: the ledger was off, so no rows); a wrong
        result is an error of the run unless `record` is False."""
        rows = await self.rows(ids)
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        ok = counts == ({expect: len(ids)} if expect else {})
        out: dict[str, Any] = {"ok": ok, "rows_by_status": counts}
        starts = [r["started_at"] for r in rows if r["started_at"]]
        ends = [r["finished_at"] for r in rows if r["finished_at"]]
        if expect and starts and ends:
            span = (max(ends) - min(starts)).total_seconds()
            out["ledger_span_s"] = round(span, 3)
            out["ledger_jobs_per_s"] = round(len(ids) / span, 1) if span > 0 else None
        if not ok and record:
            want = f"{len(ids)} {expect}" if expect else "none"
            self.error(f"ledger rows wrong: expected {want}, got {counts}")
        return out

    # -- clean-up ------------------------------------------------------------------------------

    async def cleanup(self) -> None:
        await self.stop_workers(list(self.workers))
        if self.args.keep:
            say(f"keeping the ledger rows and Redis keys of run {self.run_id} (--keep)")
            return
        async with self.database[Role.ADMIN].connection() as conn:
            cur = await conn.execute(DELETE_RUN.format(sql.Literal(f"{self.run_id}-%")))
            rows = cur.rowcount
        keys = [
            f"arq:{kind}:{job_id}"
            for job_id in self.job_ids
            for kind in ("job", "result", "retry", "in-progress")
        ]
        keys += [k for q in self.queues for k in (q, q + ":staging", q + ":health-check")]
        # The priorities' queues and the claim's turn counter of each bench worker's queue.
        keys += [k for q in self.queues for k in (*all_queues(q), turns_key(q))]
        removed = 0
        for start in range(0, len(keys), 1000):
            removed += int(await self.arq.delete(*keys[start : start + 1000]))
        # API jobs that the stack's worker never ran must not run after their rows are gone.
        api_ids = [i for i in self.job_ids if i.startswith(f"{self.run_id}-api")]
        for start in range(0, len(api_ids), 1000):
            for queue in all_queues(self.settings.queue_name):
                await self.arq.zrem(queue, *api_ids[start : start + 1000])
        say(f"clean-up: deleted {rows} ledger rows and {removed} Redis keys of run {self.run_id}")
