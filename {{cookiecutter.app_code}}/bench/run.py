#!/usr/bin/env python3
"""`make bench`: throughput and latency of the running stack, printed as a table and saved as JSON.

Runs against the stack `make up` started (PostgreSQL, Redis, the API); it starts its own worker
processes (bench/worker.py: the service's WorkerSettings on a queue of their own) and measures:

1. raw enqueue: `enqueue_job` straight into arq, 32 at a time (the floor of a submission);
2. API submissions: POST /api/v1/jobs over HTTP (httpx, async, 32 at a time): accepted/s,
   latency and the API's CPU per request; first with the stack's worker paused (the API
   alone, as on a host of its own), then beside it; then the same with wrk, a load generator
   that costs little CPU; batches (POST /api/v1/batches, 500 jobs a batch, 4 in flight) and
   their drain by the stack's worker; submit-to-start through the API at light load. The
   stack's own worker runs these jobs;
3. drain: no-op jobs and sleep jobs, one worker process and one per core, ledger on (and
   no-op with the ledger off, to see what the ledger costs);
4. enqueue-to-start latency at light load, from the ledger's timestamps;
5. the same jobs drained by a worker with arq as it comes (its stock settings), with the
   ledger and without, for the ratios to (3);
6. the worker's memory (RSS) at start and after its jobs (add `--soak 100000` for a long run).

The modules: meters.py (CPU and memory, psutil), services.py (the stack under test: its mode,
pids, pausing its worker), harness.py (bench workers, staging, drains, ledger checks),
phases.py, submissions.py, wrk.py and batches.py (the phases), report.py (machine, versions,
the table).

Every job is a `noop` (jobs/noop.py), which the stack's API and worker accept only while
BENCH_JOB is on (by default with ENV=dev); ids start with `bench-<run>-`, and their ledger rows
and Redis keys are deleted at the end (`--keep` keeps them). Sizes are options (`--help`); the
default run takes about a minute on 2 cores. Benchmarks are not tests: the exit status is 1
only when the bench itself could not run or a job's ledger row is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import batches  # noqa: E402
import httpx  # noqa: E402
import phases  # noqa: E402
import report  # noqa: E402
import submissions  # noqa: E402
import wrk  # noqa: E402
from console import PACKAGE, BenchError, say  # noqa: E402
from harness import Bench  # noqa: E402
from services import recorded_mode  # noqa: E402

from {{ cookiecutter.app_code }}.core.config import Settings, SettingsError, load_settings  # noqa: E402
from {{ cookiecutter.app_code }}.db import Database, Role  # noqa: E402
from {{ cookiecutter.app_code }}.queue import QueueUnavailable, connect  # noqa: E402

RESULTS = ROOT / "bench" / "results"
QUICK = {
    "jobs": 60,
    "api_jobs": 60,
    "warmup": 10,
    "sleep_jobs": 30,
    "stock_jobs": 20,
    "stock_sleep_jobs": 10,
    "latency_jobs": 10,
    "latency_rate": 50.0,
    "batch_jobs": 40,
    "batch_size": 10,
    "wrk_seconds": 1,
}
SIZES = (
    "jobs",
    "api_jobs",
    "sleep_jobs",
    "stock_jobs",
    "stock_sleep_jobs",
    "latency_jobs",
    "concurrency",
    "workers",
    "sleep_max_jobs",
    "batch_jobs",
    "batch_size",
    "batch_flight",
    "wrk_seconds",
)
# The phases in the order they run (--phases picks some; `worker` drains what `raw` staged,
# so it needs it).
PHASES = ("raw", "api", "wrk", "batches", "latency", "worker", "ledger_off", "sleep", "stock")


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def names(text: str) -> list[str]:
    chosen = [x.strip() for x in text.split(",") if x.strip()]
    unknown = sorted(set(chosen) - set(PHASES))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown phase(s) {', '.join(unknown)}: choose among {', '.join(PHASES)}"
        )
    return chosen


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
    add("--batch-jobs", type=int, default=20000, help="jobs submitted in batches")
    add("--batch-size", type=int, default=500, help="jobs a batch (at most 1000)")
    add("--batch-flight", type=int, default=4, help="batches in flight")
    add("--wrk-seconds", type=int, default=10, help="how long wrk submits")
    add("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (cores)")
    add("--soak", type=int, default=0, help="extra no-op jobs through one worker, for memory")
    add(
        "--sweep-poll",
        type=floats,
        default=[],
        help="also drain with each of these poll delays, e.g. 0.5,0.05,0.01",
    )
    add(
        "--sweep-max-jobs",
        type=ints,
        default=[],
        help="also drain with each of these max_jobs, e.g. 10,20,50",
    )
    add("--sweep-job", choices=("noop", "sleep"), default="noop", help="the sweep's job")
    add("--sweep-only", action="store_true", help="run only the sweep's drains")
    add(
        "--phases",
        type=names,
        default=list(PHASES),
        help=f"run only these phases, e.g. api,wrk,batches (of {','.join(PHASES)})",
    )
    add("--phase-timeout", type=float, default=300.0, help="seconds a phase may take")
    add("--keep", action="store_true", help="keep the ledger rows and Redis keys")
    add("--out", type=Path, default=None, help="JSON file (default bench/results/<run>.json)")
    add("--quick", action="store_true", help="tiny sizes: checks that the bench works")
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
        args.workers = min(args.workers, 2)
    if min(getattr(args, name) for name in SIZES) < 1:
        parser.error("sizes must be at least 1")
    if args.batch_size > 1000:
        parser.error("--batch-size: a batch holds at most 1000 jobs")
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
    if not settings.bench_job_enabled:
        raise BenchError(
            "the stack does not accept the bench's `noop` job: set BENCH_JOB=true in .env "
            "(or ENV=dev), then `make up` again"
        )


async def open_bench(args: argparse.Namespace) -> Bench:
    """Settings, Redis, PostgreSQL (the admin role) and a run id: a Bench ready to run."""
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
    return Bench(settings, args, arq, database, run_id, logs, recorded_mode())


async def describe(bench: Bench) -> None:
    bench.results.update(
        run_id=bench.run_id,
        started_at=dt.datetime.now(dt.UTC).isoformat(),
        command=" ".join([Path(sys.argv[0]).name, *(sys.argv[1:])]),
        machine=report.machine(),
        versions=report.versions(),
        servers=await report.servers(bench),
        settings=report.service_settings(bench.settings, bench.mode),
        parameters={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(bench.args).items()},
    )


async def run_phases(bench: Bench) -> None:
    args = bench.args
    chosen = set(args.phases)
    if not args.sweep_only:
        staged = await phases.raw_enqueue(bench) if chosen & {"raw", "worker"} else []
        steps = {
            "api": lambda: submissions.api(bench),  # no bench worker: the API has the machine
            "wrk": lambda: wrk.wrk(bench),
            "batches": lambda: batches.batches(bench),
            "latency": lambda: submissions.api_latency(bench),
            "worker": lambda: phases.service_worker(bench, staged),
            "ledger_off": lambda: phases.ledger_off(bench),
            "sleep": lambda: phases.sleep_jobs(bench),
            "stock": lambda: phases.stock_arq(bench),
        }
        for name, step in steps.items():
            if name in chosen:
                await step()
    if args.sweep_poll or args.sweep_max_jobs or args.sweep_only:
        await phases.sweep(bench)


def write(results: dict[str, Any], out: Path, show_table: bool) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    if show_table:
        print()
        print(report.table(results))
        print()
    say(f"results: {out} ({results['seconds']:.0f} s)")


async def run(args: argparse.Namespace) -> int:
    bench = await open_bench(args)
    await describe(bench)
    results = bench.results
    mode = bench.mode or "not recorded"
    say(f"run {bench.run_id}: stack {mode}, up to {args.workers} workers, logs in {bench.logs}")
    wall = time.monotonic()
    failed = True
    try:
        await run_phases(bench)
        failed = False
    finally:
        try:
            await bench.cleanup()
        finally:
            await bench.arq.aclose()
            await bench.database.close()
            results["seconds"] = round(time.monotonic() - wall, 1)
            results["machine"]["load_average_at_end"] = report.load_average()
            write(results, args.out or RESULTS / f"{bench.run_id}.json", not failed)
    if results.get("errors"):
        for error in results["errors"]:
            say(f"error: {error}")
        return 1
    remove_logs(bench.logs)
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
