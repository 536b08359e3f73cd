#!/usr/bin/env python3
"""`make bench`: throughput and latency of the running stack, printed as a table and saved as JSON.

Runs against the stack `make up` started (PostgreSQL, Redis, the API); it starts its own worker
processes (bench/worker.py: the service's WorkerSettings on a queue of their own) and measures:

1. raw enqueue: `enqueue_job` straight into arq, 32 at a time (the floor of a submission);
2. API submissions: POST /api/v1/jobs over HTTP (httpx, async, 32 at a time): accepted/s and
   latency, and their ratio to (1); first with the stack's worker paused (the API alone, as
   on a host of its own; the targets use this figure), then beside it. The stack's own
   worker runs these jobs;
3. drain: no-op jobs and sleep jobs, one worker process and one per core, ledger on (and
   no-op with the ledger off, to see what the ledger costs);
4. enqueue-to-start latency at light load, from the ledger's timestamps;
5. the same jobs drained by a worker with arq as it comes (its stock settings), with the
   ledger and without, for the ratios to (3);
6. the worker's memory (RSS) at start and after its jobs (add `--soak 100000` for a long run).

Every job is a `noop` (jobs/noop.py) tracked by the ledger like any other job; ids start with
`bench-<run>-`, and their ledger rows and Redis keys are deleted at the end (`--keep` keeps
them). The stack's worker keeps running (but for the pause in 2): bench workers use their own
queues, so neither takes the other's jobs. Sizes are options (`--help`); the default run
takes about a minute on 2 cores. Benchmarks are not tests: missed targets are
reported, not failed; the exit status is 1 only when the bench itself could not run or a
job's ledger row is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import httpx  # noqa: E402
import psycopg  # noqa: E402
from arq.connections import ArqRedis  # noqa: E402

from {{ cookiecutter.app_code }}.core.config import Settings, SettingsError, load_settings  # noqa: E402
from {{ cookiecutter.app_code }}.db import Database, Role  # noqa: E402
from {{ cookiecutter.app_code }}.queue import QueueUnavailable, connect  # noqa: E402
from {{ cookiecutter.app_code }}.worker.heartbeat import workers_key  # noqa: E402

PACKAGE = "{{ cookiecutter.app_code }}"
RESULTS = ROOT / "bench" / "results"
RUN_DIR = ROOT / ".local" / "run"
TTY = sys.stdout.isatty()
DISTRIBUTIONS = (
    "arq",
    "redis",
    "hiredis",
    "psycopg",
    "psycopg-binary",
    "psycopg-pool",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "pydantic",
    "httpx",
)


class BenchError(RuntimeError):
    """The bench cannot go on; the message says what to do."""


def say(message: str) -> None:
    print(f"[{PACKAGE} bench] {message}", flush=True)


class Progress:
    """One line that counts up in place on a terminal, a dot a second in a log."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total = label, total
        self.start = time.monotonic()
        self.dots = 0
        print(f"[{PACKAGE} bench] {label} ...", end="", flush=True)

    def update(self, done: int) -> None:
        elapsed = time.monotonic() - self.start
        if TTY:
            print(
                f"\r[{PACKAGE} bench] {self.label} ... {done}/{self.total} ({elapsed:4.1f} s)",
                end="",
                flush=True,
            )
        elif int(elapsed) > self.dots:
            self.dots = int(elapsed)
            print(".", end="", flush=True)

    def finish(self, summary: str) -> None:
        end = f"\r[{PACKAGE} bench] {self.label} ... " if TTY else " "
        print(f"{end}{summary}\033[K" if TTY else f"{end}{summary}", flush=True)


# --- measurements helpers --------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `values`, None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def proc_cpu(pid: int | None) -> float | None:
    """CPU seconds (user + system) a process has used so far (Linux /proc), or None."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def proc_rss(pid: int) -> int | None:
    """Resident set size in bytes (Linux /proc), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def children_of(pid: int | None) -> list[int]:
    """The processes whose parent is `pid` (PostgreSQL's backends), Linux only."""
    if pid is None:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return found


@contextlib.contextmanager
def paused(pid: int | None) -> Iterator[None]:
    """SIGSTOP `pid` for the block, SIGCONT after, whatever happens (POSIX only)."""
    if pid is None or not hasattr(signal, "SIGSTOP"):
        yield
        return
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def stack_pid(name: str) -> int | None:
    """A pid from the native stack's pid files (`make up` without Docker), if it runs."""
    try:
        pid = int((RUN_DIR / f"{name}.pid").read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


class CpuMeter:
    """CPU seconds used by the bench workers, Redis and PostgreSQL over a phase (native stack)."""

    def __init__(self, workers: list[int]) -> None:
        self.workers = workers
        self.redis = stack_pid("redis")
        self.postgres = stack_pid("postgres")
        self.before = self._read()

    def _read(self) -> dict[str, float | None]:
        postgres = [self.postgres, *children_of(self.postgres)] if self.postgres else []
        return {
            "workers": _sum([proc_cpu(p) for p in self.workers]),
            "redis": proc_cpu(self.redis),
            "postgres": _sum([proc_cpu(p) for p in postgres]) if postgres else None,
            "bench": time.process_time(),
        }

    def per_job_ms(self, jobs: int) -> dict[str, float | None]:
        after = self._read()
        out: dict[str, float | None] = {}
        for key, value in after.items():
            start = self.before.get(key)
            if value is None or start is None or not jobs:
                out[key] = None
            else:  # backends that ended in between make postgres a lower bound
                out[key] = round(max(0.0, value - start) * 1000 / jobs, 3)
        return out


def _sum(values: list[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None)


# --- the run ---------------------------------------------------------------------------------


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


@dataclass
class Bench:
    settings: Settings
    args: argparse.Namespace
    arq: ArqRedis
    database: Database
    run_id: str
    logs: Path
    results: dict[str, Any] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)
    queues: set[str] = field(default_factory=set)
    job_ids: list[str] = field(default_factory=list)

    # -- names --------------------------------------------------------------------------------

    def queue(self, name: str) -> str:
        queue = f"{self.settings.app_code}:bench:{self.run_id}:{name}"
        self.queues.add(queue)
        return queue

    def ids(self, phase: str, count: int) -> list[str]:
        new = [f"{self.run_id}-{phase}-{i}" for i in range(count)]
        self.job_ids.extend(new)
        return new

    # -- workers ------------------------------------------------------------------------------

    async def start_workers(self, name: str, count: int, *argv: str) -> list[Worker]:
        """Start `count` bench workers and wait for each one's heartbeat."""
        started = []
        for _ in range(count):
            worker = spawn(name, self.logs / f"worker-{name}-{len(self.workers)}.log", argv)
            self.workers.append(worker)
            started.append(worker)
        deadline = time.monotonic() + 60
        for worker in started:
            key = workers_key(self.settings.app_code)
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

    # -- queues -------------------------------------------------------------------------------

    async def enqueue(
        self, queue: str, ids: list[str], params: dict[str, Any], label: str | None = None
    ) -> float:
        """Enqueue `ids` as noop jobs into `queue`, 32 at a time; returns the seconds it took."""
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

    async def drain(
        self, label: str, queue: str, staging: str, count: int, workers: list[Worker]
    ) -> dict[str, Any]:
        """Make the staged jobs visible at once, time until the queue is empty."""
        meter = CpuMeter([w.pid for w in workers])
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

    async def ledger_check(self, ids: list[str], expect: str | None) -> dict[str, Any]:
        """Every job's ledger row and status (None: the ledger was off, so no rows)."""
        async with self.database[Role.ADMIN].connection() as conn:
            cur = await conn.execute(
                "SELECT status, count(*) AS n, min(started_at) AS first_start, "
                "max(finished_at) AS last_finish FROM job WHERE job_id = ANY(%s) GROUP BY status",
                [ids],
            )
            rows = await cur.fetchall()
        counts = {row["status"]: row["n"] for row in rows}
        ok = counts == ({expect: len(ids)} if expect else {})
        out: dict[str, Any] = {"ok": ok, "rows_by_status": counts}
        if expect and rows:
            first = min(r["first_start"] for r in rows if r["first_start"])
            last = max(r["last_finish"] for r in rows if r["last_finish"])
            span = (last - first).total_seconds()
            out["ledger_span_s"] = round(span, 3)
            out["ledger_jobs_per_s"] = round(len(ids) / span, 1) if span > 0 else None
        if not ok:
            want = f"{len(ids)} {expect}" if expect else "none"
            self.results.setdefault("errors", []).append(
                f"ledger rows wrong: expected {want}, got {counts}"
            )
        return out

    async def rss(self, worker: Worker) -> int | None:
        return proc_rss(worker.pid)

    async def idle_cpu(self, workers: list[Worker], seconds: float = 2.0) -> float | None:
        """Percent of one core the (idle, polling) workers use."""
        before = _sum([proc_cpu(w.pid) for w in workers])
        await asyncio.sleep(seconds)
        after = _sum([proc_cpu(w.pid) for w in workers])
        if before is None or after is None:
            return None
        return round((after - before) / seconds * 100 / len(workers), 2)

    # -- phases -------------------------------------------------------------------------------

    async def phase_raw_enqueue(self) -> list[str]:
        """(1) `enqueue_job` straight into arq; the jobs wait in a staging key for (3)."""
        a = self.args
        ids = self.ids("raw", a.jobs)
        label = f"raw enqueue into arq ({a.concurrency} at a time)"
        took = await self.enqueue(self.queue("noop") + ":staging", ids, {}, label)
        self.results["raw_enqueue"] = {
            "jobs": a.jobs,
            "concurrency": a.concurrency,
            "seconds": round(took, 3),
            "jobs_per_s": round(a.jobs / took, 1),
        }
        return ids

    async def phase_service_worker(self, ids: list[str]) -> None:
        """(3) no-op drains with the service's settings, (4) latency, (6) memory."""
        a = self.args
        cores = a.workers
        drains = self.results.setdefault("drain", {})
        noop: dict[str, Any] = {}
        q_on = self.queue("noop")
        staging = q_on + ":staging"
        main = await self.start_workers("service", 1, "--queue", q_on)
        service = main[0]
        memory: dict[str, Any] = {"pid_role": "the one-worker, service-settings bench worker"}
        self.results["memory"] = memory
        memory["rss_at_start_bytes"] = await self.rss(service)
        self.results["idle_cpu_percent_of_core"] = await self.idle_cpu(main)
        drains["noop_1_worker_ledger_on"] = result = await self.drain(
            "drain no-op, 1 worker, ledger on", q_on, staging, a.jobs, main
        )
        result["ledger"] = await self.ledger_check(ids, "succeeded")
        memory["rss_after_first_drain_bytes"] = await self.rss(service)
        jobs_through_service = a.jobs

        # (4) enqueue-to-start at light load, on the same worker.
        await self.phase_latency(q_on)
        jobs_through_service += a.latency_jobs

        if cores > 1:
            more = await self.start_workers("service", cores - 1, "--queue", q_on)
            ids = self.ids("cores", a.jobs)
            await self.enqueue(staging, ids, noop)
            drains[f"noop_{cores}_workers_ledger_on"] = result = await self.drain(
                f"drain no-op, {cores} workers, ledger on", q_on, staging, a.jobs, main + more
            )
            result["ledger"] = await self.ledger_check(ids, "succeeded")
            await self.stop_workers(more)
            jobs_through_service += a.jobs // cores

        if a.soak:
            memory["soak_jobs"] = a.soak
            samples: list[dict[str, int | None]] = []
            chunk = max(1000, a.soak // 10)
            for start in range(0, a.soak, chunk):
                ids = self.ids(f"soak{start}", min(chunk, a.soak - start))
                await self.enqueue(staging, ids, noop)
                await self.drain(f"soak {start + len(ids)}/{a.soak}", q_on, staging, len(ids), main)
                samples.append({"jobs": start + len(ids), "rss_bytes": await self.rss(service)})
                check = await self.ledger_check(ids, "succeeded")
                if not check["ok"]:
                    memory["soak_ledger"] = check
            memory["soak_samples"] = samples
            jobs_through_service += a.soak
        memory["rss_at_end_bytes"] = await self.rss(service)
        memory["jobs_run"] = jobs_through_service
        await self.stop_workers(main)

    async def phase_other_drains(self) -> None:
        """(3) the ledger off, sleep jobs; (5) arq's stock settings."""
        a = self.args
        cores = a.workers
        drains = self.results.setdefault("drain", {})
        noop: dict[str, Any] = {}
        sleep = {"sleep_ms": a.sleep_ms}

        # The ledger off: the same jobs without the wrapper, one worker.
        q_off = self.queue("noop-off")
        staging = q_off + ":staging"
        off = await self.start_workers("ledger-off", 1, "--queue", q_off, "--ledger", "off")
        ids = self.ids("off", a.jobs)
        await self.enqueue(staging, ids, noop)
        drains["noop_1_worker_ledger_off"] = result = await self.drain(
            "drain no-op, 1 worker, ledger off", q_off, staging, a.jobs, off
        )
        result["ledger"] = await self.ledger_check(ids, None)
        await self.stop_workers(off)

        # Sleep jobs, max_jobs=10: one worker, then one per core.
        q_sleep = self.queue("sleep")
        staging = q_sleep + ":staging"
        argv: tuple[str, ...] = ("--queue", q_sleep, "--max-jobs", str(a.sleep_max_jobs))
        first = await self.start_workers("sleep", 1, *argv)
        ids = self.ids("sleep", a.sleep_jobs)
        await self.enqueue(staging, ids, sleep)
        label = f"drain {a.sleep_ms} ms jobs, 1 worker, max_jobs={a.sleep_max_jobs}"
        drains["sleep_1_worker_ledger_on"] = result = await self.drain(
            label, q_sleep, staging, a.sleep_jobs, first
        )
        result["ledger"] = await self.ledger_check(ids, "succeeded")
        result["ideal_jobs_per_s"] = round(a.sleep_max_jobs * 1000 / a.sleep_ms, 1)
        if cores > 1:
            more = await self.start_workers("sleep", cores - 1, *argv)
            ids = self.ids("sleepcores", a.sleep_jobs)
            await self.enqueue(staging, ids, sleep)
            label = f"drain {a.sleep_ms} ms jobs, {cores} workers, max_jobs={a.sleep_max_jobs}"
            drains[f"sleep_{cores}_workers_ledger_on"] = result = await self.drain(
                label, q_sleep, staging, a.sleep_jobs, first + more
            )
            result["ledger"] = await self.ledger_check(ids, "succeeded")
            result["ideal_jobs_per_s"] = round(cores * a.sleep_max_jobs * 1000 / a.sleep_ms, 1)
            await self.stop_workers(more)
        await self.stop_workers(first)

        # (5) arq's stock settings, the same jobs (ledger on).
        q_stock = self.queue("stock")
        staging = q_stock + ":staging"
        stock = await self.start_workers("stock", 1, "--queue", q_stock, "--stock")
        self.results["idle_cpu_percent_of_core_stock"] = await self.idle_cpu(stock)
        ids = self.ids("stock", a.stock_jobs)
        await self.enqueue(staging, ids, noop)
        drains["noop_1_worker_stock_arq"] = result = await self.drain(
            "drain no-op, 1 worker, arq stock settings", q_stock, staging, a.stock_jobs, stock
        )
        result["ledger"] = await self.ledger_check(ids, "succeeded")
        ids = self.ids("stocksleep", a.stock_sleep_jobs)
        await self.enqueue(staging, ids, sleep)
        drains["sleep_1_worker_stock_arq"] = result = await self.drain(
            f"drain {a.sleep_ms} ms jobs, 1 worker, arq stock settings",
            q_stock,
            staging,
            a.stock_sleep_jobs,
            stock,
        )
        result["ledger"] = await self.ledger_check(ids, "succeeded")
        await self.stop_workers(stock)

        # arq as it comes, without the ledger: the plain-arq baseline (the higher of the two
        # stock figures is the one the targets use).
        q_stock = self.queue("stock-off")
        staging = q_stock + ":staging"
        argv = ("--queue", q_stock, "--stock", "--ledger", "off")
        stock = await self.start_workers("stock-ledger-off", 1, *argv)
        ids = self.ids("stockoff", a.stock_jobs)
        await self.enqueue(staging, ids, noop)
        drains["noop_1_worker_stock_arq_ledger_off"] = result = await self.drain(
            "drain no-op, 1 worker, arq stock settings, ledger off",
            q_stock,
            staging,
            a.stock_jobs,
            stock,
        )
        result["ledger"] = await self.ledger_check(ids, None)
        await self.stop_workers(stock)

    async def phase_latency(self, queue: str) -> None:
        """Jobs one at a time, `latency_rate` a second, on an idle worker: the ledger's
        started_at minus the enqueue time arq recorded."""
        a = self.args
        ids = self.ids("latency", a.latency_jobs)
        progress = Progress(f"enqueue-to-start at light load ({a.latency_rate:g} jobs/s)", len(ids))
        for n, job_id in enumerate(ids, 1):
            await self.arq.enqueue_job(
                "noop", _job_id=job_id, _queue_name=queue, _expires=self.settings.key_ttl_seconds
            )
            progress.update(n)
            await asyncio.sleep(1 / a.latency_rate)
        deadline = time.monotonic() + 30
        while await self.arq.zcard(queue):
            if time.monotonic() > deadline:
                raise BenchError(f"latency jobs still queued after 30 s; see {self.logs}")
            await asyncio.sleep(0.02)
        async with self.database[Role.ADMIN].connection() as conn:
            cur = await conn.execute(
                "SELECT extract(epoch FROM started_at - enqueued_at) AS wait, status "
                "FROM job WHERE job_id = ANY(%s)",
                [ids],
            )
            rows = await cur.fetchall()
        waits = [float(r["wait"]) for r in rows if r["wait"] is not None]
        result = {
            "jobs": len(ids),
            "rate_per_s": a.latency_rate,
            "p50_ms": ms(percentile(waits, 50)),
            "p95_ms": ms(percentile(waits, 95)),
            "p99_ms": ms(percentile(waits, 99)),
            "max_ms": ms(max(waits) if waits else None),
            "ledger": await self.ledger_check(ids, "succeeded"),
        }
        self.results["enqueue_to_start"] = result
        progress.finish(f"p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms")

    async def phase_api(self) -> None:
        """(2) POST /api/v1/jobs, `concurrency` at a time: first the API alone (the stack's
        worker paused, as on a host of its own), then beside the running worker.

        On a 2-core machine the stack's worker, running the submitted jobs as they come,
        takes CPU the API would use; paused (SIGSTOP), it runs them once it is resumed. The
        targets use the first figure; both are reported.
        """
        a = self.args
        ids = self.ids("api", a.warmup + a.api_jobs)
        worker = stack_pid("worker")
        with paused(worker):
            result, accepted = await self.measure_api(ids, "the API alone, stack worker paused")
        result["stack_worker_paused"] = worker is not None
        self.results["api"] = result
        ids = self.ids("apiw", a.warmup + a.api_jobs // 2)
        shared, more = await self.measure_api(ids, "beside the running stack worker")
        self.results["api_worker_running"] = shared
        raw = self.results.get("raw_enqueue", {}).get("jobs_per_s")
        for r in (result, shared):
            r["ratio_to_raw_enqueue"] = round(r["accepted_per_s"] / raw, 3) if raw else None
        await self.wait_for_stack_worker(result, accepted + more)

    async def measure_api(self, ids: list[str], label: str) -> tuple[dict[str, Any], list[str]]:
        """One httpx.AsyncClient per connection: one client with a pool of 32 costs the bench
        2-3 times the CPU per request (httpcore's pool bookkeeping), CPU the API needs more."""
        a, s = self.args, self.settings
        warmup, measured = ids[: a.warmup], ids[a.warmup :]
        headers = {"Authorization": f"Bearer {s.api_token.get_secret_value()}"}
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        accepted_ids: list[str] = []
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(
                    httpx.AsyncClient(
                        base_url=f"http://127.0.0.1:{s.api_port}",
                        headers=headers,
                        limits=limits,
                        timeout=30,
                    )
                )
                for _ in range(a.concurrency)
            ]

            async def post(client: httpx.AsyncClient, job_id: str) -> None:
                begin = time.perf_counter()
                response = await client.post(
                    "/api/v1/jobs", json={"job_id": job_id, "function": "noop", "params": {}}
                )
                took = time.perf_counter() - begin
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code == 202:
                    latencies.append(took)
                    accepted_ids.append(job_id)

            async def run(batch: list[str], progress: Progress | None) -> float:
                pending = iter(batch)

                async def sender(client: httpx.AsyncClient) -> None:
                    for job_id in pending:
                        await post(client, job_id)
                        if progress and sum(statuses.values()) % 100 == 0:
                            progress.update(sum(statuses.values()))

                start = time.perf_counter()
                await asyncio.gather(*(sender(client) for client in clients))
                return time.perf_counter() - start

            await run(warmup, None)
            latencies.clear()
            statuses.clear()
            api = stack_pid("api")
            meter = CpuMeter([api, *children_of(api)] if api else [])  # WEB_CONCURRENCY > 1
            worker_meter = CpuMeter([p for p in (stack_pid("worker"),) if p])
            progress = Progress(
                f"API POST /api/v1/jobs, {a.concurrency} at a time, {label}", len(measured)
            )
            took = await run(measured, progress)
        accepted = statuses.get(202, 0)
        cpu = meter.per_job_ms(len(measured))
        stack_worker = worker_meter.per_job_ms(len(measured))["workers"]
        result = {
            "requests": len(measured),
            "concurrency": a.concurrency,
            "seconds": round(took, 3),
            "accepted": accepted,
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "accepted_per_s": round(accepted / took, 1),
            "p50_ms": ms(percentile(latencies, 50)),
            "p95_ms": ms(percentile(latencies, 95)),
            "p99_ms": ms(percentile(latencies, 99)),
            "cpu_ms_per_request": {
                "api": cpu["workers"],
                "stack_worker": stack_worker,
                "redis": cpu["redis"],
                "postgres": cpu["postgres"],
                "bench_client": cpu["bench"],
            },
        }
        progress.finish(
            f"{result['accepted_per_s']:,.0f} accepted/s, p50 {result['p50_ms']} ms, "
            f"p99 {result['p99_ms']} ms"
            + ("" if accepted == len(measured) else f" (statuses: {result['statuses']})")
        )
        return result, accepted_ids

    async def wait_for_stack_worker(self, result: dict[str, Any], accepted_ids: list[str]) -> None:
        """The stack's own worker runs the API's jobs; wait, so that it does not share the CPU
        with the drains below (and so that the clean-up finds them finished)."""
        a = self.args
        progress = Progress("the stack's worker runs the API's jobs", len(accepted_ids))
        deadline = time.monotonic() + a.phase_timeout
        begin, done = time.perf_counter(), 0
        while time.monotonic() < deadline:
            async with self.database[Role.ADMIN].connection() as conn:
                cur = await conn.execute(
                    "SELECT count(*) AS n FROM job WHERE job_id = ANY(%s) "
                    "AND status IN ('succeeded', 'failed')",
                    [accepted_ids],
                )
                row = await cur.fetchone()
            done = int(row["n"]) if row else 0
            progress.update(done)
            if done >= len(accepted_ids):
                break
            await asyncio.sleep(0.1)
        finished = done >= len(accepted_ids)
        result["stack_worker_ran_all"] = finished
        if finished and accepted_ids:
            result["ledger"] = await self.ledger_check(accepted_ids, "succeeded")
            progress.finish(f"done in {time.perf_counter() - begin:.1f} s")
        else:
            progress.finish(f"{done} of {len(accepted_ids)} ran: is the stack's worker up?")
            self.results.setdefault("errors", []).append(
                "the stack's worker did not run the API's jobs: `make status`, `make logs`"
            )

    async def phase_sweep(self) -> None:
        """Optional: one worker's drain rate (no-op or sleep jobs, --sweep-job) and idle CPU
        for each poll delay in --sweep-poll and each max_jobs in --sweep-max-jobs (the
        service's when not given)."""
        a = self.args
        sweep: list[dict[str, Any]] = []
        for delay in a.sweep_poll or [self.settings.worker_poll_delay]:
            for max_jobs in a.sweep_max_jobs or [self.settings.worker_max_jobs]:
                name = f"sweep{len(sweep)}-poll{delay:g}-max{max_jobs}"
                queue, argv = self.queue(name), ("--poll-delay", str(delay))
                workers = await self.start_workers(
                    name, 1, "--queue", queue, *argv, "--max-jobs", str(max_jobs)
                )
                idle = await self.idle_cpu(workers, 3.0)
                sleep = a.sweep_job == "sleep"
                ids = self.ids(name, a.sleep_jobs if sleep else a.jobs)
                params = {"sleep_ms": a.sleep_ms} if sleep else {}
                await self.enqueue(queue + ":staging", ids, params)
                job = f"{a.sleep_ms} ms jobs" if sleep else "no-op"
                label = f"poll_delay={delay:g}, max_jobs={max_jobs}: drain {job}"
                result = await self.drain(label, queue, queue + ":staging", len(ids), workers)
                result.update(
                    poll_delay=delay, max_jobs=max_jobs, job=job, idle_cpu_percent_of_core=idle
                )
                if sleep:
                    result["ideal_jobs_per_s"] = round(max_jobs * 1000 / a.sleep_ms, 1)
                result["ledger"] = await self.ledger_check(ids, "succeeded")
                sweep.append(result)
                await self.stop_workers(workers)
        self.results["sweep"] = sweep

    # -- clean-up ------------------------------------------------------------------------------

    async def cleanup(self) -> None:
        await self.stop_workers(list(self.workers))
        if self.args.keep:
            say(f"keeping the ledger rows and Redis keys of run {self.run_id} (--keep)")
            return
        async with self.database[Role.ADMIN].connection() as conn:
            cur = await conn.execute("DELETE FROM job WHERE job_id LIKE %s", [f"{self.run_id}-%"])
            rows = cur.rowcount
        keys = [
            f"arq:{kind}:{job_id}"
            for job_id in self.job_ids
            for kind in ("job", "result", "retry", "in-progress")
        ]
        keys += [k for q in self.queues for k in (q, q + ":staging", q + ":health-check")]
        removed = 0
        for start in range(0, len(keys), 1000):
            removed += int(await self.arq.delete(*keys[start : start + 1000]))
        # API jobs that the stack's worker never ran must not run after their rows are gone.
        api_ids = [i for i in self.job_ids if i.startswith(f"{self.run_id}-api-")]
        for start in range(0, len(api_ids), 1000):
            await self.arq.zrem(self.settings.queue_name, *api_ids[start : start + 1000])
        say(f"clean-up: deleted {rows} ledger rows and {removed} Redis keys of run {self.run_id}")


# --- machine, versions, settings -------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory_bytes": memory,
        "python": platform.python_version(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    found["libpq"] = str(psycopg.pq.version())
    return found


def service_settings(settings: Settings) -> dict[str, Any]:
    api_pid = stack_pid("api")
    argv = None
    if api_pid:
        with contextlib.suppress(OSError):
            raw = Path(f"/proc/{api_pid}/cmdline").read_bytes().split(b"\0")
            argv = [part.decode(errors="replace") for part in raw if part][1:]
    return {
        "worker_poll_delay": settings.worker_poll_delay,
        "worker_max_jobs": settings.worker_max_jobs,
        "worker_job_timeout": settings.worker_job_timeout,
        "db_pool_min_size": settings.db_pool_min_size,
        "db_pool_max_size": settings.db_pool_max_size,
        "key_ttl_seconds": settings.key_ttl_seconds,
        "api_process_argv": argv,
        "stack": "local processes" if stack_pid("postgres") or stack_pid("redis") else "other",
    }


async def servers(bench: Bench) -> dict[str, Any]:
    info = await bench.arq.info("server")
    async with bench.database[Role.ADMIN].connection() as conn:
        cur = await conn.execute("SHOW server_version")
        row = await cur.fetchone()
        cur = await conn.execute("SHOW synchronous_commit")
        sync = await cur.fetchone()
    return {
        "redis": info.get("redis_version"),
        "postgresql": row["server_version"] if row else None,
        "postgresql_synchronous_commit": sync["synchronous_commit"] if sync else None,
    }


# --- targets and the table -------------------------------------------------------------------


def targets(results: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The issue's targets, each with what was measured and whether it is met."""
    drain = results.get("drain", {})
    out: list[dict[str, Any]] = []

    def add(name: str, goal: str, value: float | None, met: bool | None, distance: str) -> None:
        out.append(
            {"target": name, "goal": goal, "measured": value, "met": met, "distance": distance}
        )

    on = drain.get("noop_1_worker_ledger_on", {}).get("jobs_per_s")
    off = drain.get("noop_1_worker_ledger_off", {}).get("jobs_per_s")
    stocks = [
        drain.get(name, {}).get("jobs_per_s")
        for name in ("noop_1_worker_stock_arq", "noop_1_worker_stock_arq_ledger_off")
    ]
    stock = max((s for s in stocks if s), default=None)
    if on and stock:
        ratio = on / stock
        add(
            "no-op drain, ledger on, 1 worker vs arq stock",
            ">= 9x",
            round(ratio, 2),
            ratio >= 9,
            f"{ratio:.2f}x ({on:,.0f} vs {stock:,.0f} jobs/s, the higher stock figure); "
            f"needs {9 * stock:,.0f} jobs/s"
            + (f"; ledger off: {off:,.0f} ({off / stock:.2f}x)" if off else ""),
        )
    sleep = drain.get("sleep_1_worker_ledger_on", {})
    if sleep.get("jobs_per_s"):
        share = sleep["jobs_per_s"] / sleep["ideal_jobs_per_s"]
        add(
            f"{args.sleep_ms} ms jobs, max_jobs={args.sleep_max_jobs}, 1 worker",
            f">= 75% of {sleep['ideal_jobs_per_s']:,.0f} jobs/s",
            round(share * 100, 1),
            share >= 0.75,
            f"{share:.1%} ({sleep['jobs_per_s']:,.0f} jobs/s)",
        )
    api = results.get("api", {})
    if api.get("accepted_per_s") is not None:
        rate, p99 = api["accepted_per_s"], api["p99_ms"]
        add(
            "API submissions accepted/s",
            ">= 1,000/s",
            rate,
            rate >= 1000,
            f"{rate / 1000:.0%} of 1,000/s",
        )
        if p99 is not None:
            add(
                f"API p99 latency at concurrency {args.concurrency}",
                "< 100 ms",
                p99,
                p99 < 100,
                f"{p99:.1f} ms",
            )
    latency = results.get("enqueue_to_start", {})
    if latency.get("p50_ms") is not None:
        p50 = latency["p50_ms"]
        add("enqueue-to-start p50 at light load", "< 15 ms", p50, p50 < 15, f"{p50:.1f} ms")
    memory = results.get("memory", {})
    start, end = memory.get("rss_after_first_drain_bytes"), memory.get("rss_at_end_bytes")
    if start and end:
        growth = (end - start) / 2**20
        jobs = memory.get("jobs_run", 0)
        flat = growth < 5 if memory.get("soak_jobs", 0) >= 100_000 else None
        add(
            "worker RSS flat across 100,000 jobs",
            "< 5 MiB growth after warm-up",
            round(growth, 2),
            flat,
            f"{growth:+.1f} MiB over {jobs:,} jobs"
            + ("" if flat is not None else " (run with --soak 100000 to judge)"),
        )
    return out


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}{unit}"
    return f"{value:,}{unit}" if isinstance(value, int) else f"{value}{unit}"


def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, ...]] = [
        ("measurement", "jobs", "rate", "latency", "worker CPU/job", "note")
    ]
    raw = results.get("raw_enqueue")
    if raw:
        rows.append(
            (
                "raw enqueue into arq",
                fmt(raw["jobs"]),
                fmt(raw["jobs_per_s"], "/s"),
                "",
                "",
                f"concurrency {raw['concurrency']}",
            )
        )
    for key, name in (("api", "API alone"), ("api_worker_running", "API beside the worker")):
        api = results.get(key)
        if api:
            rows.append(
                (
                    f"{name}: POST /api/v1/jobs",
                    fmt(api["requests"]),
                    fmt(api["accepted_per_s"], "/s"),
                    f"p50 {fmt(api['p50_ms'])} / p95 {fmt(api['p95_ms'])} / "
                    f"p99 {fmt(api['p99_ms'])} ms",
                    "",
                    f"{fmt(api['ratio_to_raw_enqueue'])}x of raw enqueue",
                )
            )
    stock = max(
        (
            results.get("drain", {}).get(name, {}).get("jobs_per_s") or 0
            for name in ("noop_1_worker_stock_arq", "noop_1_worker_stock_arq_ledger_off")
        ),
        default=0,
    )
    stock_sleep = results.get("drain", {}).get("sleep_1_worker_stock_arq", {}).get("jobs_per_s")
    for name, drain in results.get("drain", {}).items():
        cpu = drain.get("cpu_ms_per_job", {}).get("workers")
        note = []
        base = stock_sleep if name.startswith("sleep") else stock
        if base and "stock" not in name:
            note.append(f"{drain['jobs_per_s'] / base:.2f}x stock")
        if drain.get("ideal_jobs_per_s"):
            note.append(f"{drain['jobs_per_s'] / drain['ideal_jobs_per_s']:.0%} of ideal")
        if drain.get("ledger") and not drain["ledger"]["ok"]:
            note.append("LEDGER WRONG")
        rows.append(
            (
                "drain " + name.replace("_", " "),
                fmt(drain["jobs"]),
                fmt(drain["jobs_per_s"], "/s"),
                "",
                fmt(cpu, " ms"),
                ", ".join(note),
            )
        )
    latency = results.get("enqueue_to_start")
    if latency:
        rows.append(
            (
                "enqueue-to-start, light load",
                fmt(latency["jobs"]),
                fmt(latency["rate_per_s"], "/s"),
                f"p50 {fmt(latency['p50_ms'])} / p95 {fmt(latency['p95_ms'])} ms",
                "",
                "ledger started_at - enqueue time",
            )
        )
    for sweep in results.get("sweep", []):
        rows.append(
            (
                f"poll_delay={sweep['poll_delay']:g}, max_jobs={sweep['max_jobs']}",
                fmt(sweep["jobs"]),
                fmt(sweep["jobs_per_s"], "/s"),
                "",
                fmt(sweep["cpu_ms_per_job"]["workers"], " ms"),
                f"idle CPU {fmt(sweep['idle_cpu_percent_of_core'])}% of a core",
            )
        )
    memory = results.get("memory", {})
    if memory.get("rss_at_start_bytes"):
        mib = {k: v / 2**20 for k, v in memory.items() if k.endswith("_bytes") and v}
        rows.append(
            (
                "worker RSS",
                fmt(memory.get("jobs_run")),
                "",
                f"{mib.get('rss_at_start_bytes', 0):.1f} -> "
                f"{mib.get('rss_after_first_drain_bytes', 0):.1f} -> "
                f"{mib.get('rss_at_end_bytes', 0):.1f} MiB",
                "",
                "start -> after first drain -> end",
            )
        )
    idle = results.get("idle_cpu_percent_of_core")
    if idle is not None:
        rows.append(
            (
                "idle worker CPU",
                "",
                "",
                "",
                "",
                f"{idle}% of a core (stock arq: {results.get('idle_cpu_percent_of_core_stock')}%)",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    for t in results.get("targets", []):
        mark = {True: "met", False: "NOT MET", None: "n/a"}[t["met"]]
        lines.append(f"target {t['target']} ({t['goal']}): {mark}: {t['distance']}")
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--jobs", type=int, default=6000, help="no-op jobs per drain (and raw enqueue)")
    add("--api-jobs", type=int, default=3000, help="API submissions measured")
    add("--warmup", type=int, default=100, help="API submissions before measuring")
    add("--concurrency", type=int, default=32, help="submissions in flight (API, enqueue)")
    add("--sleep-ms", type=int, default=25, help="how long a sleep job sleeps")
    add("--sleep-jobs", type=int, default=1500, help="sleep jobs per drain")
    add("--sleep-max-jobs", type=int, default=10, help="max_jobs of the sleep-job workers")
    add("--stock-jobs", type=int, default=1000, help="no-op jobs for arq's stock settings")
    add("--stock-sleep-jobs", type=int, default=100, help="sleep jobs for arq's stock settings")
    add("--latency-jobs", type=int, default=200, help="jobs for enqueue-to-start latency")
    add("--latency-rate", type=float, default=50.0, help="jobs a second for that latency")
    add("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (cores)")
    add("--soak", type=int, default=0, help="extra no-op jobs through one worker, for memory")
    add(
        "--sweep-poll",
        type=lambda s: [float(x) for x in s.split(",") if x],
        default=[],
        help="also drain with each of these poll delays, e.g. 0.5,0.05,0.01,0.005",
    )
    add(
        "--sweep-max-jobs",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[],
        help="also drain with each of these max_jobs, e.g. 10,20,50",
    )
    add("--sweep-job", choices=("noop", "sleep"), default="noop", help="the sweep's job")
    add("--sweep-only", action="store_true", help="run only the sweep's drains")
    add("--phase-timeout", type=float, default=300.0, help="seconds a phase may take")
    add("--keep", action="store_true", help="keep the ledger rows and Redis keys")
    add("--out", type=Path, default=None, help="JSON file (default bench/results/<run>.json)")
    add("--quick", action="store_true", help="tiny sizes: checks that the bench works")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.api_jobs, args.warmup = 60, 60, 10
        args.sleep_jobs, args.stock_jobs, args.stock_sleep_jobs = 30, 20, 10
        args.latency_jobs, args.latency_rate = 10, 50.0
        args.workers = min(args.workers, 2)
    if (
        min(
            args.jobs,
            args.api_jobs,
            args.sleep_jobs,
            args.stock_jobs,
            args.stock_sleep_jobs,
            args.latency_jobs,
            args.concurrency,
            args.workers,
            args.sleep_max_jobs,
        )
        < 1
    ):
        parser.error("sizes must be at least 1")
    return args


async def preflight(settings: Settings) -> None:
    url = f"http://127.0.0.1:{settings.api_port}/health"
    try:
        async with httpx.AsyncClient(timeout=3) as client:
            (await client.get(url)).raise_for_status()
    except httpx.HTTPError as exc:
        raise BenchError(
            f"the API does not answer at {url} ({exc}): start the stack with `make up`"
        ) from None


async def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise BenchError(str(exc)) from None
    await preflight(settings)
    try:
        arq = await connect(settings)
    except QueueUnavailable as exc:
        raise BenchError(f"{exc}: start the stack with `make up`") from None
    database = Database(settings, Role.ADMIN)
    await database.open()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_id = f"bench-{stamp}-{secrets.token_hex(2)}"
    logs = Path(tempfile.mkdtemp(prefix=f"{PACKAGE}-{run_id}-"))
    bench = Bench(settings, args, arq, database, run_id, logs)
    results = bench.results
    results.update(
        run_id=run_id,
        started_at=dt.datetime.now(dt.UTC).isoformat(),
        command=" ".join([Path(sys.argv[0]).name, *(sys.argv[1:])]),
        machine=machine(),
        versions=versions(),
        servers=await servers(bench),
        settings=service_settings(settings),
        parameters={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    )
    say(f"run {run_id}: {args.workers} worker processes max, worker logs in {logs}")
    wall = time.monotonic()
    failed = False
    try:
        if not args.sweep_only:
            staged = await bench.phase_raw_enqueue()
            await bench.phase_api()  # no bench worker running: the API has the machine
            await bench.phase_service_worker(staged)
            await bench.phase_other_drains()
        if args.sweep_poll or args.sweep_max_jobs or args.sweep_only:
            await bench.phase_sweep()
    except BenchError:
        failed = True
        raise
    finally:
        try:
            await bench.cleanup()
        finally:
            await arq.aclose()
            await database.close()
            results["seconds"] = round(time.monotonic() - wall, 1)
            results["machine"]["load_average_at_end"] = (
                list(os.getloadavg()) if hasattr(os, "getloadavg") else None
            )
            results["targets"] = targets(results, args)
            out = args.out or RESULTS / f"{run_id}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=2, default=str) + "\n")
            if not failed:
                print()
                print(table(results))
                print()
            say(f"results: {out} ({results['seconds']:.0f} s)")
    if results.get("errors"):
        for error in results["errors"]:
            say(f"error: {error}")
        return 1
    remove_logs(logs)
    return 0


def remove_logs(logs: Path) -> None:
    with contextlib.suppress(OSError):
        for path in logs.iterdir():
            path.unlink()
        logs.rmdir()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except BenchError as exc:
        say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
